// Shared by the benchmarks: a browser, a signal-server, and pages that join rooms.
import { chromium } from 'playwright';
import { startServer } from '../tests/harness.js';
import config from '../playwright.config.js';

export const MiB = 1024 * 1024;

export async function openBench() {
  const browser = await chromium.launch(config.use.launchOptions);
  const server = await startServer();
  return {
    /** The server's URL (`http://127.0.0.1:PORT`). */
    serverUrl: server.url,
    /** A fresh page (its own context) on the server's origin. */
    async page() {
      const context = await browser.newContext();
      const p = await context.newPage();
      await p.goto(`${server.url}/`);
      p.on('pageerror', (err) => console.error('page error:', err.message));
      return p;
    },
    /** Joins `page` to `room` as `window.swarm`. */
    async join(page, room) {
      return page.evaluate(async (room) => {
        const { default: init, Swarm } = await import('/pkg/client_wasm.js');
        await init();
        window.swarm = await Swarm.join(location.origin, room);
        return window.swarm.id;
      }, room);
    },
    /** Shares `size` deterministic bytes from `page`; the same size gives the same id. */
    async shareBytes(page, size) {
      return page.evaluate(async (size) => {
        const bytes = new Uint8Array(size);
        for (let i = 0; i < size; i += 4096) bytes[i] = (i * 2654435761) >>> 24;
        return window.swarm.shareFile(new Blob([bytes]));
      }, size);
    },
    async close() {
      await server.stop();
      await browser.close();
    },
  };
}
