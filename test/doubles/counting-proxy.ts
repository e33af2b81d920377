/**
 * An HTTP proxy on a unix socket in front of the controller, for tests that
 * must see which controller requests an agent makes (say none): start the
 * agent with `--controller unix://<proxy.socketPath>`. Each request is
 * forwarded to the controller as it came and recorded ("POST /v1/...");
 * the answer goes back as the controller gave it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CountingProxy {
  socketPath: string;
  url: string;
  /** "METHOD /path?query" of every request forwarded, in order. */
  requests: string[];
  close(): Promise<void>;
}

/** upstream: the controller's unix:// URL. */
export async function startCountingProxy(upstream: string): Promise<CountingProxy> {
  if (!upstream.startsWith('unix://')) throw new Error(`counting proxy: a unix:// controller URL, not ${upstream}`);
  const target = upstream.slice('unix://'.length);
  const dir = mkdtempSync(join(tmpdir(), 'berth-proxy-'));
  const socketPath = join(dir, 'controller.sock');
  const requests: string[] = [];
  const open = new Set<Socket>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    requests.push(`${req.method} ${req.url}`);
    const up = request({ socketPath: target, path: req.url, method: req.method, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('error', (e) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`proxy: ${e.message}`);
    });
    req.pipe(up);
  });
  server.on('connection', (s) => { open.add(s); s.on('close', () => open.delete(s)); });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(socketPath, () => res());
  });
  return {
    socketPath, url: `unix://${socketPath}`, requests,
    close: () => new Promise<void>((res) => {
      for (const s of open) s.destroy();
      server.close(() => { rmSync(dir, { recursive: true, force: true }); res(); });
    }),
  };
}
