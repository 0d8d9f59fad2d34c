/** vitest globalSetup: one real server for the whole run, stopped at teardown. */

import type { TestProject } from 'vitest/node';

import { type ServerProcess, startServer } from './server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    fastpacaUrl: string;
    fastpacaApiKey: string;
  }
}

let server: ServerProcess | undefined;

export async function setup(project: TestProject): Promise<void> {
  server = await startServer();
  project.provide('fastpacaUrl', server.url);
  project.provide('fastpacaApiKey', server.apiKey);
}

export async function teardown(): Promise<void> {
  await server?.stop();
}
