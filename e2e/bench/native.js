// Native peer benchmark (not a test): throughput native->native, native->browser and
// browser->browser for the same file in one run, then the native seeder's RSS while it
// serves a large file to a native downloader.
//   node bench/native.js [MiB] [seed GiB]
import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openBench, MiB } from './common.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PEER = path.join(root, 'target/release/swarm-peer');
const size = Number(process.argv[2] ?? 512) * MiB;
const bigSize = Number(process.argv[3] ?? 4) * 1024 * MiB;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'swarm-native-bench-'));

/** Writes `size` random bytes to `file`, 64 MiB at a time. */
function writeRandom(file, size) {
  const fd = fs.openSync(file, 'w');
  const block = Buffer.alloc(64 * MiB);
  for (let written = 0; written < size; written += block.length) {
    randomFillSync(block);
    fs.writeSync(fd, block, 0, Math.min(block.length, size - written));
  }
  fs.closeSync(fd);
}

/** Peak resident set of process `pid` so far, in bytes (VmHWM). */
function peakRss(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmHWM:\s+(\d+) kB/.exec(status)[1]) * 1024;
  } catch {
    return NaN;
  }
}

/** `swarm-peer seed FILE`; resolves with its content id once it is serving. */
async function seed(serverUrl, room, file) {
  const child = spawn(PEER, ['seed', file, '--server', serverUrl, '--room', room], { stdio: ['ignore', 'pipe', 'inherit'] });
  const id = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      if (out.includes('\n')) resolve(out.split('\t')[0]);
    });
    child.on('exit', (code) => reject(new Error(`seed exited with ${code}`)));
  });
  return { id, child, stop: () => child.kill('SIGTERM') };
}

/** `swarm-peer get ID -o OUT`, timed from start to exit; returns MiB/s and its peak RSS. */
async function get(serverUrl, room, id, output, bytes) {
  const started = performance.now();
  const child = spawn(PEER, ['get', id, '-o', output, '--server', serverUrl, '--room', room], { stdio: ['ignore', 'ignore', 'inherit'] });
  let peak = 0;
  const sampler = setInterval(() => { peak = Math.max(peak, peakRss(child.pid) || 0); }, 200);
  const code = await new Promise((resolve) => child.on('exit', resolve));
  clearInterval(sampler);
  if (code !== 0) throw new Error(`get exited with ${code}`);
  const seconds = (performance.now() - started) / 1000;
  fs.rmSync(output);
  return { mibps: bytes / MiB / seconds, seconds, peak };
}

const bench = await openBench();
const serverUrl = bench.serverUrl;
try {
  const file = path.join(dir, 'file.bin');
  writeRandom(file, size);
  const rows = [];

  // native -> native
  const seeder = await seed(serverUrl, 'native-bench', file);
  const n2n = await get(serverUrl, 'native-bench', seeder.id, path.join(dir, 'copy.bin'), size);
  rows.push(['native -> native', n2n.mibps]);
  console.log(`native -> native: ${n2n.mibps.toFixed(1)} MiB/s (${n2n.seconds.toFixed(1)} s, downloader peak RSS ${(n2n.peak / MiB).toFixed(0)} MiB)`);

  // native -> browser: the page downloads from the same seeder.
  const receiver = await bench.page();
  await bench.join(receiver, 'native-bench');
  await receiver.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), seeder.id, { timeout: 30_000 });
  const n2b = await receiver.evaluate(async (id) => {
    const started = performance.now();
    const blob = await window.swarm.download(id).blob();
    return blob.size / (1024 * 1024) / ((performance.now() - started) / 1000);
  }, seeder.id);
  rows.push(['native -> browser', n2b]);
  console.log(`native -> browser: ${n2b.toFixed(1)} MiB/s`);
  seeder.stop();
  await receiver.context().close();

  // browser -> browser, the same size, for the ratio.
  const sender = await bench.page();
  const downloader = await bench.page();
  await bench.join(sender, 'browser-bench');
  await bench.join(downloader, 'browser-bench');
  const id = await bench.shareBytes(sender, size);
  await downloader.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), id, { timeout: 30_000 });
  const b2b = await downloader.evaluate(async (id) => {
    const started = performance.now();
    const blob = await window.swarm.download(id).blob();
    return blob.size / (1024 * 1024) / ((performance.now() - started) / 1000);
  }, id);
  rows.push(['browser -> browser', b2b]);
  console.log(`browser -> browser: ${b2b.toFixed(1)} MiB/s`);
  await sender.context().close();
  await downloader.context().close();
  fs.rmSync(file);

  console.log(`\n| ${size / MiB} MiB | MiB/s | / browser -> browser |\n|---|---|---|`);
  for (const [name, rate] of rows) console.log(`| ${name} | ${rate.toFixed(1)} | ${(rate / b2b).toFixed(2)} |`);

  // The seeder's memory while it serves a large file to a native downloader.
  const big = path.join(dir, 'big.bin');
  writeRandom(big, bigSize);
  const bigSeeder = await seed(serverUrl, 'native-rss', big);
  const afterHash = peakRss(bigSeeder.child.pid);
  const fetched = await get(serverUrl, 'native-rss', bigSeeder.id, path.join(dir, 'big-copy.bin'), bigSize);
  const seederPeak = peakRss(bigSeeder.child.pid);
  bigSeeder.stop();
  fs.rmSync(big);
  console.log(`\nseeding ${bigSize / 1024 / MiB} GiB: seeder peak RSS ${(afterHash / MiB).toFixed(0)} MiB after hashing, ${(seederPeak / MiB).toFixed(0)} MiB after serving it whole at ${fetched.mibps.toFixed(1)} MiB/s; downloader peak RSS ${(fetched.peak / MiB).toFixed(0)} MiB`);
} finally {
  await bench.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
