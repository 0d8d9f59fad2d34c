#!/usr/bin/env node
/**
 * What `next start` would do for this example's two route handlers, with
 * node:http and no build step:
 *
 *   POST /api/chat      → route.mjs   (app/api/chat/route.ts)
 *   GET  /api/history   → history.mjs (app/api/history/route.ts)
 *
 * Each Node request becomes a Web `Request`, the handler's `Response` is
 * written back, its body streamed as it is produced (the chat answer is
 * Server-Sent Events).
 *
 *   PORT          where to listen (default 3000); HOST (default 127.0.0.1)
 *   FASTPACA_URL  the Fastpaca server (default http://localhost:4000/v1)
 *   FASTPACA_API_KEY, OPENAI_API_KEY, OPENAI_MODEL: optional
 */

import { createServer } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { GET as historyGET } from './history.mjs';
import { chatModel } from './model.mjs';
import { POST as chatPOST } from './route.mjs';

const routes = {
  '/api/chat': { POST: chatPOST },
  '/api/history': { GET: historyGET },
};

/** A Node request as the Web `Request` a Next.js route handler gets. */
function toWebRequest(req, signal) {
  const url = new URL(req.url ?? '/', `http://${req.headers.host ?? 'localhost'}`);
  const headers = new Headers();
  for (let index = 0; index < req.rawHeaders.length; index += 2) {
    headers.append(req.rawHeaders[index], req.rawHeaders[index + 1]);
  }
  const hasBody = req.method !== 'GET' && req.method !== 'HEAD';
  return new Request(url, {
    method: req.method,
    headers,
    body: hasBody ? Readable.toWeb(req) : undefined,
    duplex: 'half',
    signal,
  });
}

/** A Web `Response` written to the Node response, its body streamed chunk by chunk. */
async function sendWebResponse(response, res) {
  const headers = {};
  response.headers.forEach((value, name) => {
    if (name !== 'set-cookie') {
      headers[name] = value;
    }
  });
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) {
    headers['set-cookie'] = cookies;
  }
  res.writeHead(response.status, response.statusText || undefined, headers);
  if (response.body === null) {
    res.end();
    return;
  }
  res.flushHeaders();
  await pipeline(Readable.fromWeb(response.body), res);
}

async function handle(req, res) {
  const { pathname } = new URL(req.url ?? '/', 'http://localhost');
  const route = routes[pathname.replace(/\/+$/, '') || '/'];
  if (route === undefined) {
    return sendWebResponse(Response.json({ error: { code: 'not_found', message: `no route ${pathname}` } }, { status: 404 }), res);
  }
  const handler = route[req.method ?? 'GET'];
  if (handler === undefined) {
    const allow = Object.keys(route).join(', ');
    return sendWebResponse(
      Response.json({ error: { code: 'method_not_allowed', message: `use ${allow}` } }, { status: 405, headers: { allow } }),
      res,
    );
  }
  // Like Next.js: request.signal aborts when the client goes away.
  const controller = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) {
      controller.abort();
    }
  });
  const response = await handler(toWebRequest(req, controller.signal));
  await sendWebResponse(response, res);
}

const server = createServer((req, res) => {
  handle(req, res).catch((error) => {
    if (error?.code === 'ERR_STREAM_PREMATURE_CLOSE' || error?.name === 'AbortError') {
      return; // the client went away mid-answer; ctx.stream still appends the answer
    }
    console.error('[nextjs-chat] request failed:', error);
    if (!res.headersSent) {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'internal_error', message: 'the route failed' } }));
    } else {
      res.destroy();
    }
  });
});

const port = Number(process.env.PORT ?? 3000);
const host = process.env.HOST ?? '127.0.0.1';
const { name } = await chatModel();
server.listen(port, host, () => {
  const fastpacaUrl = process.env.FASTPACA_URL ?? 'http://localhost:4000/v1';
  console.log(`nextjs-chat listening on http://${host}:${server.address().port} (Fastpaca ${fastpacaUrl}, model ${name})`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
