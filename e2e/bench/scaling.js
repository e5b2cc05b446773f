// Benchmark: one downloader and N = 1, 2, 4 seeders whose upload is capped at the same rate
// (the test-only `swarm._capUpload`). A swarm should add up its seeders: the goal is an
// aggregate speed of at least 0.8 × N × cap.
//
// Usage: node bench/scaling.js [MiB=96] [cap MiB/s=3]
import { MiB, openBench } from './common.js';

const size = Number(process.argv[2] || 96) * MiB;
const cap = Number(process.argv[3] || 3) * MiB;

const bench = await openBench();
const rows = [];
for (const n of [1, 2, 4]) {
  const room = `scaling-${n}-${Math.random().toString(36).slice(2)}`;
  const seeders = [];
  for (let i = 0; i < n; i++) {
    const page = await bench.page();
    await bench.join(page, room);
    seeders.push(page);
  }
  const downloader = await bench.page();
  await bench.join(downloader, room);
  await downloader.waitForFunction((n) => window.swarm.peers().length === n, n, { timeout: 60_000 });
  let id;
  for (const seeder of seeders) {
    id = await bench.shareBytes(seeder, size);
    await seeder.evaluate((cap) => window.swarm._capUpload(cap), cap);
  }
  await downloader.waitForFunction(([id, n]) => window.swarm.files().some((f) => f.id === id && f.sources === n), [id, n], { timeout: 60_000 });
  const { ms, from } = await downloader.evaluate(async (id) => {
    const started = performance.now();
    const dl = window.swarm.download(id);
    await dl.blob();
    return { ms: performance.now() - started, from: dl.progress.from };
  }, id);
  const aggregate = size / (ms / 1000);
  const ratio = aggregate / (n * cap);
  const shares = Object.values(from).map((b) => `${Math.round((100 * b) / size)}%`).join('/');
  rows.push({ n, aggregate, ratio, shares });
  console.log(`N=${n}: ${(aggregate / MiB).toFixed(2)} MiB/s aggregate, ${ratio.toFixed(2)} of N × cap, per-seeder shares ${shares}`);
  for (const page of [...seeders, downloader]) await page.context().close();
}
console.log(`\n| seeders | cap each | aggregate | aggregate / (N × cap) | bytes from each seeder |`);
console.log(`|---|---|---|---|---|`);
for (const r of rows) {
  console.log(`| ${r.n} | ${(cap / MiB).toFixed(1)} MiB/s | ${(r.aggregate / MiB).toFixed(2)} MiB/s | ${r.ratio.toFixed(2)} | ${r.shares} |`);
}
await bench.close();
