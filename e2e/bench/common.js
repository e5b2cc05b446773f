// Shared by the benchmarks: a browser, a signal-server, and pages that join rooms.
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright';
import { startServer } from '../tests/harness.js';
import config from '../playwright.config.js';

export const MiB = 1024 * 1024;

/** User and system CPU seconds from a `/proc/.../stat` line (fields after the name, which may
 *  itself hold spaces and parentheses). */
function statSeconds(stat) {
  const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** CPU time of every Chromium process so far, by pid: `{type, seconds}` (type from its
 *  command line: browser, renderer, utility:NetworkService, gpu-process…). */
export function chromiumCpu() {
  const out = new Map();
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      // Chromium rewrites its command line into one space-separated string.
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split(/[\0 ]/);
      if (!args[0].includes('chrom')) continue;
      const arg = (name) => (args.find((a) => a.startsWith(`--${name}=`)) || '').slice(name.length + 3);
      const sub = arg('utility-sub-type').split('.').pop();
      const type = (arg('type') || 'browser') + (sub ? `:${sub}` : '');
      out.set(pid, { type, seconds: statSeconds(readFileSync(`/proc/${pid}/stat`, 'utf8')) });
    } catch { /* the process ended */ }
  }
  return out;
}

/** CPU time of every thread of every Chromium process so far, by `pid/tid`:
 *  `{type: "process type / thread name", seconds}` (digits at the end of a name dropped). */
export function chromiumThreads() {
  const out = new Map();
  for (const [pid, { type }] of chromiumCpu()) {
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).replace(/[0-9]+$/, 'N');
        out.set(`${pid}/${tid}`, { type: `${type} / ${comm}`, seconds: statSeconds(stat) });
      }
    } catch { /* the process ended */ }
  }
  return out;
}

/** CPU milliseconds per MiB moved from `before` to `now` (both `chromiumCpu()` or both
 *  `chromiumThreads()`), summed by their `type`. */
function perMiB(before, now, bytes) {
  const byType = {};
  for (const [key, { type, seconds }] of now) {
    const spent = seconds - (before.get(key)?.seconds || 0);
    byType[type] = (byType[type] || 0) + (spent * 1000) / (bytes / MiB);
  }
  return byType;
}

/** CPU milliseconds per MiB moved since `before` (a `chromiumCpu()`), by process type. */
export const cpuPerMiB = (before, bytes) => perMiB(before, chromiumCpu(), bytes);

/** CPU milliseconds per MiB moved since `before` (a `chromiumThreads()`), by process type
 *  and thread name. */
export const threadsPerMiB = (before, bytes) => perMiB(before, chromiumThreads(), bytes);

/** The whole machine's CPU time so far (`/proc/stat`), in seconds: `{idle, total}` over all
 *  cores. */
export function machineCpu() {
  const ticks = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0);
  return { idle: (ticks[3] + ticks[4]) / 100, total: total / 100 };
}

/** The share of the machine's CPU time left idle since `before` (a `machineCpu()`). */
export function idleShare(before) {
  const now = machineCpu();
  return (now.idle - before.idle) / Math.max(now.total - before.total, 1e-9);
}

/** `{a: 1.23, b: 4.5}` as `a 1.2, b 4.5 (total 5.7)`, dropping types under 0.5. */
export function formatCpu(byType) {
  const total = Object.values(byType).reduce((a, b) => a + b, 0);
  const parts = Object.entries(byType).filter(([, v]) => v >= 0.5).map(([k, v]) => `${k} ${v.toFixed(1)}`);
  return `${parts.join(', ')} (total ${total.toFixed(1)})`;
}

/** `size` deterministic bytes as a Blob (the same size gives the same bytes). It runs in a
 *  page: pass it to `evaluate`. */
export function deterministicBlob(size) {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) bytes[i] = (i * 2654435761) >>> 24;
  return new Blob([bytes]);
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
 *
 * With `{ onDisk: true }`, every Chromium runs one ordinary profile kept on disk (in a
 * temporary directory removed on close), as a user's browser does, instead of giving every
 * page an incognito context of its own. It matters for storage: an incognito context keeps
 * the Origin Private File System in the browser process's memory and carries every read and
 * write of a sync access handle there and back, where an ordinary profile's worker writes to
 * a file on disk itself. Pages of one profile share an origin, so `join` empties the
 * client's storage directory first.
 */
export async function openBench({ pinned = false, onDisk = false } = {}) {
  const temporary = pinned || onDisk ? mkdtempSync(join(tmpdir(), 'bench-chromium-')) : null;
  const cpus = pinned ? [0, 1] : [null];
  const launch = (cpu) => {
    const options = cpu === null ? config.use.launchOptions : pinnedLaunchOptions(cpu, temporary);
    return onDisk
      ? chromium.launchPersistentContext(join(temporary, `profile-${cpu ?? 'shared'}`), options)
      : chromium.launch(options);
  };
  const browsers = await Promise.all(cpus.map(launch));
  const server = await startServer();
  return {
    /** The server's URL (`http://127.0.0.1:PORT`). */
    serverUrl: server.url,
    /** A fresh page (in a context of its own unless `onDisk`) on the server's origin, in
     *  browser `which` when pinned. */
    async page(which = 0) {
      const browser = browsers[which % browsers.length];
      const p = onDisk ? await browser.newPage() : await (await browser.newContext()).newPage();
      await p.goto(`${server.url}/`);
      p.on('pageerror', (err) => console.error('page error:', err.message));
      return p;
    },
    /** Closes `pages` (and their contexts, unless `onDisk`). */
    async done(...pages) {
      await Promise.all(pages.map((p) => (onDisk ? p.close() : p.context().close())));
    },
    /** Joins `page` to `room` as `window.swarm`. */
    async join(page, room) {
      return page.evaluate(async ([room, onDisk]) => {
        if (onDisk) {
          const root = await navigator.storage.getDirectory();
          await root.removeEntry('swarm', { recursive: true }).catch(() => {});
        }
        const { default: init, Swarm } = await import('/pkg/client_wasm.js');
        await init();
        window.swarm = await Swarm.join(location.origin, room);
        return window.swarm.id;
      }, [room, onDisk]);
    },
    /** Shares `size` deterministic bytes from `page`; the same size gives the same id. */
    async shareBytes(page, size) {
      return page.evaluate(`window.swarm.shareFile((${deterministicBlob})(${size}))`);
    },
    async close() {
      await server.stop();
      await Promise.all(browsers.map((b) => b.close()));
      if (temporary) rmSync(temporary, { recursive: true, force: true });
    },
  };
}
