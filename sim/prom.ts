/**
 * Scraper side of the metrics listener (tests and benches): fetch over http:// or unix://, and a
 * parser for the Prometheus text exposition format 0.0.4 (what prom-client
 * writes): `# HELP`/`# TYPE` lines and samples `name{label="value",...} value [timestamp]`,
 * label values escaped with \\, \" and \n. Strict: a line it does not
 * understand is an error, so a malformed exposition fails the test.
 */
import * as http from 'node:http';

export interface Sample { name: string; labels: Record<string, string>; value: number }
export interface Exposition { samples: Sample[]; types: Map<string, string>; help: Map<string, string> }

export function get(url: string, path: string): Promise<{ status: number; body: string; type: string }> {
  const unix = url.startsWith('unix://') ? url.slice('unix://'.length) : undefined;
  const target = unix ? { socketPath: unix, path } : new URL(path, url);
  return new Promise((resolve, reject) => {
    const req = http.get(target as http.RequestOptions, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type'] ?? '') }));
    });
    req.setTimeout(5000, () => req.destroy(new Error(`GET ${url}${path}: timed out`)));
    req.on('error', reject);
  });
}

export async function scrape(url: string): Promise<Exposition> {
  const r = await get(url, '/metrics');
  if (r.status !== 200) throw new Error(`GET ${url}/metrics: ${r.status} ${r.body}`);
  if (!r.type.startsWith('text/plain')) throw new Error(`GET ${url}/metrics: content-type ${r.type}`);
  return parseExposition(r.body);
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/** Values parse as Prometheus' own parser does (Go's ParseFloat): Inf and NaN in any case (prom-client writes "Nan"). */
function parseValue(text: string, line: string): number {
  if (/^\+?inf(inity)?$/i.test(text)) return Infinity;
  if (/^-inf(inity)?$/i.test(text)) return -Infinity;
  if (/^nan$/i.test(text)) return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`bad value "${text}" in: ${line}`);
  return Number(text);
}

export function parseExposition(text: string): Exposition {
  const out: Exposition = { samples: [], types: new Map(), help: new Map() };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(line);
      if (!m) continue; // a plain comment
      if (m[1] === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3])) throw new Error(`bad TYPE: ${line}`);
        out.types.set(m[2], m[3]);
      } else {
        out.help.set(m[2], m[3].replace(/\\(n|\\)/g, (_, c: string) => (c === 'n' ? '\n' : '\\')));
      }
      continue;
    }
    const name = NAME.exec(line)?.[0];
    if (!name) throw new Error(`bad sample: ${line}`);
    let i = name.length;
    const labels: Record<string, string> = {};
    if (line[i] === '{') {
      i++;
      while (line[i] !== '}') {
        const l = LABEL.exec(line.slice(i))?.[0];
        if (!l || line[i + l.length] !== '=' || line[i + l.length + 1] !== '"') throw new Error(`bad label at ${i}: ${line}`);
        i += l.length + 2;
        let v = '';
        for (;;) {
          const c = line[i++];
          if (c === undefined) throw new Error(`unterminated label value: ${line}`);
          if (c === '"') break;
          if (c === '\\') {
            const e = line[i++];
            if (e === 'n') v += '\n';
            else if (e === '\\' || e === '"') v += e;
            else throw new Error(`bad escape \\${e}: ${line}`);
          } else v += c;
        }
        labels[l] = v;
        if (line[i] === ',') i++;
        else if (line[i] !== '}') throw new Error(`expected , or } at ${i}: ${line}`);
      }
      i++;
    }
    if (line[i] !== ' ') throw new Error(`expected a space before the value: ${line}`);
    const [value, ts, extra] = line.slice(i + 1).split(' ');
    if (extra !== undefined || (ts !== undefined && !/^-?\d+$/.test(ts))) throw new Error(`bad sample tail: ${line}`);
    out.samples.push({ name, labels, value: parseValue(value, line) });
  }
  return out;
}

/** Sum of the samples named `name` whose labels include `labels`; undefined when none match. */
export function metric(e: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const hits = e.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return hits.length === 0 ? undefined : hits.reduce((a, s) => a + s.value, 0);
}
