/**
 * One HTTP/1.1 exchange over a raw socket, for tests that must send what
 * Node's own client refuses to (bad methods, broken targets, foreign Host,
 * bodies that never end). Reads until the server closes the connection.
 */
import * as net from 'node:net';

export interface RawAnswer { status: number; headers: Record<string, string>; body: any; raw: string }

/**
 * Sends `head` (request line and header lines, without the final blank line)
 * and `body`. Adds `Connection: close` unless keepOpen, in which case the
 * server is expected to close on its own.
 */
export function rawRequest(where: net.NetConnectOpts, head: string, body: string | Buffer = '', opts: { keepOpen?: boolean } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(where);
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => {
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, split < 0 ? all.length : split).toString('latin1');
      // The first answer only: bytes after a short Content-Length are a second request, with an answer of its own.
      const length = /\r\ncontent-length: *(\d+)/i.exec(head);
      const text = length && split >= 0 ? all.subarray(0, split + 4 + Number(length[1])).toString('utf8') : all.toString('utf8');
      const [statusLine, ...lines] = text.slice(0, split < 0 ? text.length : split).split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines) { const i = l.indexOf(':'); if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim(); }
      let parsed: unknown;
      try { parsed = JSON.parse(text.slice(split + 4)); } catch { parsed = undefined; }
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body: parsed, raw: text });
    });
    s.write(`${head}\r\n${opts.keepOpen ? '' : 'Connection: close\r\n'}\r\n`);
    s.write(body);
  });
}
