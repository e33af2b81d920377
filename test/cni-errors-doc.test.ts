/**
 * docs/errors.md must list every kind of common/errors.ts ERROR_TABLE with
 * its codes. The table between the markers is generated from ERROR_TABLE;
 * regenerate it with: BERTH_UPDATE_DOCS=1 npx ava dist/test/cni-errors-doc.test.js
 */
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BerthError, ERROR_TABLE, type ErrorKind } from '../common/errors';

const DOC = join(resolve(__dirname, '../..'), 'docs/errors.md');
const BEGIN = '<!-- errors-table:begin (generated from common/errors.ts; see test/cni-errors-doc.test.ts) -->';
const END = '<!-- errors-table:end -->';

export function renderErrorTable(): string {
  const rows = (Object.keys(ERROR_TABLE) as ErrorKind[]).map((kind) => {
    const [cni, http, exit, msg] = ERROR_TABLE[kind];
    const onWire = new BerthError(kind).cniCode;
    const wire = onWire === cni ? `${cni}` : `${cni} (sent as ${onWire}: retryable)`;
    return `| ${cni} | \`${kind}\` | ${msg} | ${wire} | ${http} | ${exit} |`;
  });
  return [
    BEGIN,
    '| Code | Kind | Message (`msg`) | CNI code on stdout | HTTP | CLI exit |',
    '|---:|---|---|---|---:|---:|',
    ...rows,
    END,
  ].join('\n');
}

test('docs/errors.md lists every error kind with its codes', (t) => {
  let doc = readFileSync(DOC, 'utf8');
  const want = renderErrorTable();
  if (process.env.BERTH_UPDATE_DOCS === '1' && doc.indexOf(BEGIN) >= 0 && doc.indexOf(END) > doc.indexOf(BEGIN)) {
    doc = doc.slice(0, doc.indexOf(BEGIN)) + want + doc.slice(doc.indexOf(END) + END.length);
    writeFileSync(DOC, doc);
  }
  const start = doc.indexOf(BEGIN);
  const end = doc.indexOf(END);
  t.true(start >= 0 && end > start, 'generated table markers present');
  t.is(doc.slice(start, end + END.length), want, 'table is out of date: rerun with BERTH_UPDATE_DOCS=1');
  for (const kind of Object.keys(ERROR_TABLE)) t.regex(doc, new RegExp(`\\| \`${kind}\` \\|`), kind);
});

test('CNI codes are unique per kind, and Berth codes start at 100', (t) => {
  const codes = Object.values(ERROR_TABLE).map((r) => r[0]);
  t.is(new Set(codes).size, codes.length);
  for (const c of codes) t.true(c < 100 ? [1, 2, 3, 4, 5, 6, 7, 11, 50, 51].includes(c) : c >= 100, String(c));
});
