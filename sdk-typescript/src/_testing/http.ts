/**
 * Serve a web-standard route handler (`(Request) => Promise<Response>`, the
 * shape of a Next.js `route.ts` export) over real HTTP on a free loopback
 * port, streaming the Response body as it is produced.
 */

import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ServedRoute {
  url: string;
  close: () => Promise<void>;
}

export async function serveRoute(handler: (request: Request) => Promise<Response>): Promise<ServedRoute> {
  const server: Server = createServer((incoming, outgoing) => {
    void (async () => {
      try {
        const response = await handler(await toRequest(incoming));
        outgoing.writeHead(response.status, Object.fromEntries(response.headers));
        if (response.body !== null) {
          for await (const chunk of response.body) {
            outgoing.write(chunk);
          }
        }
        outgoing.end();
      } catch (error) {
        outgoing.writeHead(500).end(String(error));
      }
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

async function toRequest(incoming: IncomingMessage): Promise<Request> {
  const chunks: Buffer[] = [];
  for await (const chunk of incoming) {
    chunks.push(chunk as Buffer);
  }
  const headers = new Headers();
  for (const [name, value] of Object.entries(incoming.headers)) {
    if (typeof value === 'string') {
      headers.set(name, value);
    }
  }
  const init: RequestInit = { method: incoming.method ?? 'GET', headers };
  if (chunks.length > 0) {
    init.body = Buffer.concat(chunks);
  }
  return new Request(`http://${incoming.headers.host ?? 'localhost'}${incoming.url ?? '/'}`, init);
}
