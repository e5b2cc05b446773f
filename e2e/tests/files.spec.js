// File sharing: verified multi-source transfer where every downloader becomes a source.
import { test, expect, joinRoom, waitForPeers, thrown, mesh, share, startDownload, finish } from './harness.js';

const MiB = 1024 * 1024;

test.describe.configure({ timeout: 180_000 });

test('a 20 MiB file shared by one page is downloaded byte-identical by two others', async ({ browser, server }) => {
  const [a, b, c] = await mesh(browser, server, 'share', 3);
  await b.page.evaluate(() => {
    window.offered = [];
    window.swarm.on('file', (info) => window.offered.push(info));
  });
  const file = await share(a, 20 * MiB, 1);
  await b.page.waitForFunction(() => window.offered.length === 1);
  expect(await b.page.evaluate(() => window.offered[0])).toEqual({
    id: file.id, name: 'random.bin', size: 20 * MiB, mime: 'application/octet-stream', sources: 1, complete: false,
  });
  await startDownload(b, file.id);
  await startDownload(c, file.id);
  for (const member of [b, c]) {
    expect(await finish(member)).toEqual({ size: 20 * MiB, hash: file.hash });
    const listed = await member.page.evaluate((id) => window.swarm.files().find((f) => f.id === id), file.id);
    expect(listed).toMatchObject({ name: 'random.bin', size: 20 * MiB, complete: true, mime: 'application/octet-stream' });
    const progress = await member.page.evaluate(() => window.lastProgress);
    expect(progress.received).toBe(20 * MiB);
  }
});

test('with two seeders the downloader receives pieces from both', async ({ browser, server }) => {
  const [a, b, c] = await mesh(browser, server, 'two-seeders', 3);
  const file = await share(a, 20 * MiB, 2);
  expect((await share(b, 20 * MiB, 2)).id).toBe(file.id);
  await c.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources === 2), file.id);
  await startDownload(c, file.id);
  expect(await finish(c)).toEqual({ size: 20 * MiB, hash: file.hash });
  const from = await c.page.evaluate(() => window.lastProgress.from);
  expect(Object.keys(from).sort()).toEqual([a.id, b.id].sort());
  // Both served a real share (how much each gives depends on how busy its renderer is).
  for (const id of [a.id, b.id]) expect(from[id]).toBeGreaterThan(1 * MiB);
});

test('a seeder closed mid-download does not stop it', async ({ browser, server }) => {
  const [a, b, c] = await mesh(browser, server, 'seeder-leaves', 3);
  const size = 48 * MiB;
  const file = await share(a, size, 3);
  await share(b, size, 3);
  await c.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources === 2), file.id);
  await startDownload(c, file.id);
  await c.page.waitForFunction(() => window.lastProgress.received > 2 * 1024 * 1024, null, { polling: 10, timeout: 60_000 });
  await a.context.close();
  const atClose = await c.page.evaluate(() => window.lastProgress.received);
  expect(atClose).toBeLessThan(size);
  expect(await finish(c)).toEqual({ size, hash: file.hash });
});

test('a corrupting peer is detected and the file still arrives intact', async ({ browser, server }) => {
  const [a, b, c] = await mesh(browser, server, 'liar', 3);
  const file = await share(a, 20 * MiB, 4);
  await share(b, 20 * MiB, 4);
  await b.page.evaluate(() => window.swarm._corruptUploads(true));
  await c.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources === 2), file.id);
  await startDownload(c, file.id);
  expect(await finish(c)).toEqual({ size: 20 * MiB, hash: file.hash });
  const bad = await c.page.evaluate(() => window.badPeers);
  expect(bad).toEqual([{ peer: b.id, reason: 'piece failed verification' }]);
});

test('a finished downloader serves a fourth page after the original seeder is gone', async ({ browser, server }) => {
  const [a, b] = await mesh(browser, server, 'relay', 2);
  const file = await share(a, 20 * MiB, 5);
  await startDownload(b, file.id);
  expect(await finish(b)).toEqual({ size: 20 * MiB, hash: file.hash });
  await a.context.close();
  const d = await joinRoom(browser, server, 'relay', 'relay-d');
  await waitForPeers(d, [b.id]);
  await startDownload(d, file.id);
  expect(await finish(d)).toEqual({ size: 20 * MiB, hash: file.hash });
  expect(Object.keys(await d.page.evaluate(() => window.lastProgress.from))).toEqual([b.id]);
});

test('file errors are named, and empty files are fine', async ({ browser, server }) => {
  const [a, b] = await mesh(browser, server, 'file-errors', 2);
  expect(await thrown(a, () => window.swarm.download('nope'))).toMatchObject({ name: 'SwarmError', code: 'invalid-content-id' });
  expect(await thrown(a, () => window.swarm.download('0'.repeat(64)))).toMatchObject({ code: 'unknown-content' });
  expect(await thrown(a, () => window.swarm.shareFile(42))).toMatchObject({ code: 'not-a-file' });
  expect(await thrown(a, () => window.swarm.download('0'.repeat(64)).on('nope', () => {}))).toMatchObject({ code: 'unknown-content' });

  // Zero bytes.
  const empty = await share(a, 0, 1);
  await startDownload(b, empty.id);
  expect(await finish(b)).toEqual({ size: 0, hash: empty.hash });

  // Cancelling rejects blob() with `cancelled`.
  const big = await share(a, 40 * MiB, 6);
  await startDownload(b, big.id);
  const cancelled = await b.page.evaluate(async () => {
    window.dl.cancel();
    try { await window.dl.blob(); return null; } catch (err) { return { name: err.name, code: err.code }; }
  });
  expect(cancelled).toEqual({ name: 'SwarmError', code: 'cancelled' });

  // A file larger than the storage quota fails before any transfer (here the memory tier,
  // bounded to 1000 bytes).
  const small = await joinRoom(browser, server, 'file-errors', 'small', { storage: 'memory', _memoryLimit: 1000 });
  expect(await small.page.evaluate(() => window.swarm.storage)).toBe('memory');
  await small.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), big.id);
  const quota = await small.page.evaluate(async (id) => {
    const dl = window.swarm.download(id);
    try { await dl.blob(); return null; } catch (err) { return { code: err.code, message: err.message, received: dl.progress.received }; }
  }, big.id);
  expect(quota).toMatchObject({ code: 'storage-quota', received: 0 });
  expect(quota.message).toContain('quota');
});
