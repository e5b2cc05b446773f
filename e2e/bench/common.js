// Shared by the benchmarks: a browser, a signal-server, and pages that join rooms.
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright';
import { startServer } from '../tests/harness.js';
import config from '../playwright.config.js';

export const MiB = 1024 * 1024;

/** CPU time of every Chromium process so far, by pid: `{type, seconds}` (type from its
 *  command line: browser, renderer, utility:NetworkService, gpu-process…). */
export function chromiumCpu() {
  const out = new Map();
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      // Chromium rewrites its command line into one space-separated string.
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split(/[\0 ]/);
      if (!args[0].includes('chrom')) continue;
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      const arg = (name) => (args.find((a) => a.startsWith(`--${name}=`)) || '').slice(name.length + 3);
      const sub = arg('utility-sub-type').split('.').pop();
      const type = (arg('type') || 'browser') + (sub ? `:${sub}` : '');
      out.set(pid, { type, seconds: (Number(fields[11]) + Number(fields[12])) / 100 });
    } catch { /* the process ended */ }
  }
  return out;
}

/** CPU milliseconds per MiB moved since `before` (a `chromiumCpu()`), by process type. */
export function cpuPerMiB(before, bytes) {
  const byType = {};
  for (const [pid, { type, seconds }] of chromiumCpu()) {
    const spent = seconds - (before.get(pid)?.seconds || 0);
    byType[type] = (byType[type] || 0) + (spent * 1000) / (bytes / MiB);
  }
  return byType;
}

/** `{a: 1.23, b: 4.5}` as `a 1.2, b 4.5 (total 5.7)`, dropping types under 0.5. */
export function formatCpu(byType) {
  const total = Object.values(byType).reduce((a, b) => a + b, 0);
  const parts = Object.entries(byType).filter(([, v]) => v >= 0.5).map(([k, v]) => `${k} ${v.toFixed(1)}`);
  return `${parts.join(', ')} (total ${total.toFixed(1)})`;
}

/** Chromium's launch options, its processes bound to CPU `cpu` (with `taskset`) by a
 *  wrapper script written into `dir`. */
function pinnedLaunchOptions(cpu, dir) {
  const options = config.use.launchOptions;
  const wrapper = join(dir, `chromium-${cpu}`);
  writeFileSync(wrapper, `#!/bin/sh\nexec taskset -c ${cpu} ${options.executablePath} "$@"\n`);
  chmodSync(wrapper, 0o755);
  return { ...options, executablePath: wrapper };
}

/**
 * A signal-server and Chromium for a benchmark. With `{ pinned: true }`, two Chromiums of the
 * same build instead of one, each bound to a CPU of its own (0 and 1): `page(0)` opens a page
 * in the first, `page(1)` in the second, so two peers each have a core as if they were on two
 * machines, and neither pays for the other's work.
 */
export async function openBench({ pinned = false } = {}) {
  const wrappers = pinned ? mkdtempSync(join(tmpdir(), 'bench-chromium-')) : null;
  const browsers = pinned
    ? await Promise.all([0, 1].map((cpu) => chromium.launch(pinnedLaunchOptions(cpu, wrappers))))
    : [await chromium.launch(config.use.launchOptions)];
  const server = await startServer();
  return {
    /** The server's URL (`http://127.0.0.1:PORT`). */
    serverUrl: server.url,
    /** A fresh page (its own context) on the server's origin, in browser `which` when pinned. */
    async page(which = 0) {
      const browser = browsers[which % browsers.length];
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
      await Promise.all(browsers.map((b) => b.close()));
      if (wrappers) rmSync(wrappers, { recursive: true, force: true });
    },
  };
}
