/**
 * A real Fastpaca server process for the tests: the repository's
 * `.venv/bin/python -m fastpaca_server` on a free loopback port with a
 * temporary data directory and a random API key, so that the process
 * answering is provably the one started here.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPOSITORY_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export interface ServerProcess {
  /** `http://127.0.0.1:<port>` (no `/v1`). */
  url: string;
  apiKey: string;
  port: number;
  dataDirectory: string;
  child: ChildProcess;
  output: () => string;
  stop: () => Promise<void>;
}

export function pythonExecutable(): string {
  return process.env['FASTPACA_PYTHON'] ?? join(REPOSITORY_ROOT, '.venv', 'bin', 'python');
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/** Spawn the server (without waiting for it): for tests that watch it start. */
export function spawnServer(port: number, apiKey: string, dataDirectory: string): { child: ChildProcess; output: () => string } {
  const child = spawn(
    pythonExecutable(),
    ['-m', 'fastpaca_server', '--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDirectory, '--api-key', apiKey],
    { cwd: REPOSITORY_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1' } },
  );
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return { child, output: () => output };
}

/** Start a server and wait until `/health/ready` answers 200 and our API key is the one it checks. */
export async function startServer(): Promise<ServerProcess> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const port = await freePort();
    const apiKey = `test-${randomBytes(16).toString('hex')}`;
    const dataDirectory = mkdtempSync(join(tmpdir(), 'fastpaca-sdk-typescript-'));
    const { child, output } = spawnServer(port, apiKey, dataDirectory);
    const server: ServerProcess = {
      url: `http://127.0.0.1:${port}`,
      apiKey,
      port,
      dataDirectory,
      child,
      output,
      stop: () => stopProcess(child).finally(() => rmSync(dataDirectory, { recursive: true, force: true })),
    };
    try {
      await waitUntilReady(server, 30_000);
      return server;
    } catch (error) {
      lastError = error;
      await server.stop();
    }
  }
  throw lastError;
}

export async function waitUntilReady(server: Pick<ServerProcess, 'url' | 'apiKey' | 'child' | 'output'>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (server.child.exitCode !== null || server.child.signalCode !== null) {
      throw new Error(`fastpaca-server exited (${server.child.exitCode ?? server.child.signalCode}):\n${server.output()}`);
    }
    try {
      const ready = await fetch(`${server.url}/health/ready`);
      if (ready.status === 200) {
        // The process answering must be ours: it knows our random key and refuses others.
        const ours = await fetch(`${server.url}/v1/contexts/probe`, { headers: { authorization: `Bearer ${server.apiKey}` } });
        const stranger = await fetch(`${server.url}/v1/contexts/probe`, { headers: { authorization: 'Bearer not-the-key' } });
        if (ours.status === 404 && stranger.status === 401) {
          return;
        }
        throw new Error(`the server on ${server.url} is not the one started here (${ours.status}, ${stranger.status})`);
      }
    } catch (error) {
      if (error instanceof Error && error.message.includes('not the one started here')) {
        throw error;
      }
    }
    await new Promise((resolveWait) => setTimeout(resolveWait, 100));
  }
  throw new Error(`fastpaca-server on ${server.url} was not ready within ${timeoutMs} ms:\n${server.output()}`);
}

export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}
