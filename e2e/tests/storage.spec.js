// What a page keeps across reloads, and pages opened where the browser gives them less: the
// storage tiers (OPFS, IndexedDB, memory), resumed downloads, completed downloads offered again,
// corrupt stored data, `stored()` / `forget()`, and an insecure context (plain http:// from the
// namespace's non-loopback address).
import { test, expect, joinRoom, joinInPage, waitForPeers, thrown, share, startDownload, finish, helpers, startServer, testClip, kept, resume } from './harness.js';

const MiB = 1024 * 1024;

/** Reloads `member`'s page and joins `room` again (a new peer id); returns the member. */
async function reload(member, room, options = undefined) {
  await member.page.reload();
  member.id = await member.page.evaluate(joinInPage, { room, options });
  await helpers(member);
  return member;
}

test('a download reloaded half-way resumes from its stored pieces and fetches only the rest', async ({ browser, server }) => {
  const size = 30 * MiB;
  const seeder = await joinRoom(browser, server, 'resume', 'seeder');
  const file = await share(seeder, size, 11);
  // Slow enough to reload half-way.
  await seeder.page.evaluate(() => window.swarm._capUpload(6 * 1024 * 1024));
  const b = await joinRoom(browser, server, 'resume', 'b');
  expect(await b.page.evaluate(() => window.swarm.storage)).toBe('opfs');
  await startDownload(b, file.id);
  await b.page.waitForFunction(() => window.lastProgress.received >= 12 * 1024 * 1024, null, { timeout: 60_000 });

  const before = await b.page.evaluate(() => Object.values(window.lastProgress.from).reduce((a, n) => a + n, 0));
  await reload(b, 'resume');
  const entry = await kept(b, file.id);
  expect(entry).toMatchObject({ id: file.id, name: 'random.bin', size, complete: false, kind: 'download', available: true });
  expect(entry.received).toBeGreaterThanOrEqual(12 * MiB);
  expect(entry.received).toBeLessThan(size);

  // `progress.received` counts the kept pieces at once, and only the others are fetched.
  const first = await resume(b, file.id);
  expect(first).toBe(entry.received);
  expect(await finish(b)).toEqual({ size, hash: file.hash });
  const fetched = await b.page.evaluate(() => Object.values(window.dl.progress.from).reduce((a, n) => a + n, 0));
  expect(fetched).toBeLessThanOrEqual(size - entry.received + 2 * MiB);
  expect(fetched).toBeGreaterThanOrEqual(size - entry.received);
  // In all, the seeder sent little more than the file once.
  expect(before + fetched).toBeLessThanOrEqual(size + 2 * MiB);
  expect(await b.page.evaluate((id) => window.swarm.stored().find((f) => f.id === id), file.id))
    .toMatchObject({ received: size, complete: true });
});

test('a completed download is offered again after a reload, and corrupt stored data is fetched again', async ({ browser, server }) => {
  const size = 6 * MiB;
  const seeder = await joinRoom(browser, server, 'reoffer', 'seeder');
  const file = await share(seeder, size, 12);
  const b = await joinRoom(browser, server, 'reoffer', 'b');
  await startDownload(b, file.id);
  expect(await finish(b)).toEqual({ size, hash: file.hash });

  // The seeder goes; b reloads and is the only source, for a newcomer.
  await seeder.context.close();
  await reload(b, 'reoffer');
  expect(await kept(b, file.id)).toMatchObject({ complete: true, received: size, kind: 'download' });
  await b.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.complete), file.id);
  const c = await joinRoom(browser, server, 'reoffer', 'c');
  await startDownload(c, file.id);
  expect(await finish(c)).toEqual({ size, hash: file.hash });

  // Flip a byte of the stored file behind the page's back: after a reload that piece no
  // longer verifies, the file is not offered as complete, and resuming fetches that piece (from
  // c) and nothing else.
  await b.page.evaluate(async (id) => {
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('swarm');
    const handle = await dir.getFileHandle(id);
    const byte = new Uint8Array(await (await handle.getFile()).slice(300_000, 300_001).arrayBuffer());
    const writable = await handle.createWritable({ keepExistingData: true });
    await writable.write({ type: 'write', position: 300_000, data: new Uint8Array([byte[0] ^ 0xff]) });
    await writable.close();
  }, file.id);
  await reload(b, 'reoffer');
  const entry = await kept(b, file.id);
  const pieceSize = 256 * 1024;
  expect(entry).toMatchObject({ complete: false, received: size - pieceSize });
  expect(await b.page.evaluate((id) => window.swarm.files().some((f) => f.id === id && f.complete), file.id)).toBe(false);
  await b.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), file.id);
  expect(await resume(b, file.id)).toBe(size - pieceSize);
  expect(await finish(b)).toEqual({ size, hash: file.hash });
  const fetched = await b.page.evaluate(() => Object.values(window.dl.progress.from).reduce((a, n) => a + n, 0));
  expect(fetched).toBe(pieceSize);
});

test('stored() and forget(): shared files are remembered, deleted content is gone, bad ids are named errors', async ({ browser, server }) => {
  const a = await joinRoom(browser, server, 'forget', 'a');
  const shared = await share(a, 2 * MiB, 13);
  const b = await joinRoom(browser, server, 'forget', 'b');
  await waitForPeers(b, [a.id]);
  await startDownload(b, shared.id);
  expect(await finish(b)).toEqual({ size: 2 * MiB, hash: shared.hash });
  expect(await a.page.evaluate(() => window.swarm.stored())).toEqual([
    { id: shared.id, name: 'random.bin', size: 2 * MiB, mime: 'application/octet-stream', received: 2 * MiB, complete: true, kind: 'shared', available: true },
  ]);

  // After a reload, a file shared from the disk is listed but cannot be served until shared again.
  await reload(a, 'forget');
  expect(await a.page.evaluate(() => window.swarm.stored())).toMatchObject([{ id: shared.id, kind: 'shared', available: false }]);
  const again = await share(a, 2 * MiB, 13);
  expect(again.id).toBe(shared.id);
  expect(await a.page.evaluate(() => window.swarm.stored())).toMatchObject([{ id: shared.id, kind: 'shared', available: true }]);

  // With `keep`, a copy goes into storage: after a reload it is offered again by itself.
  const copied = await a.page.evaluate(async () => {
    const blob = window.makeBlob(3 * 1024 * 1024, 16);
    const id = await window.swarm.shareFile(new File([blob], 'kept.bin'), { keep: true });
    return { id, hash: await window.sha256(blob) };
  });
  await reload(a, 'forget');
  expect(await kept(a, copied.id)).toMatchObject({ name: 'kept.bin', kind: 'download', complete: true, received: 3 * MiB });
  await a.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.complete), copied.id);
  await startDownload(b, copied.id);
  expect(await finish(b)).toEqual({ size: 3 * MiB, hash: copied.hash });
  await b.page.evaluate((id) => window.swarm.forget(id), copied.id);
  expect(await thrown(a, () => window.swarm.shareFile(new Blob(['x']), { keep: 'yes' }))).toMatchObject({ code: 'invalid-option' });

  // forget() on b deletes the download: gone from stored() and from storage (not back after a reload).
  const events = await b.page.evaluate(async (id) => {
    let stored = 0;
    window.swarm.on('stored', () => { stored++; });
    await window.swarm.forget(id);
    return { stored, left: window.swarm.stored().length };
  }, shared.id);
  expect(events).toEqual({ stored: 1, left: 0 });
  await reload(b, 'forget');
  await b.page.waitForTimeout(500);
  expect(await b.page.evaluate(() => window.swarm.stored())).toEqual([]);
  expect(await thrown(b, (id) => window.swarm.forget(id), shared.id)).toMatchObject({ name: 'SwarmError', code: 'unknown-content' });
  expect(await thrown(b, () => window.swarm.forget('not-an-id'))).toMatchObject({ code: 'invalid-content-id' });
});

test('the storage tiers: IndexedDB resumes after a reload, memory keeps nothing, a bad tier name is refused', async ({ browser, server }) => {
  const size = 4 * MiB;
  const seeder = await joinRoom(browser, server, 'tiers', 'seeder');
  const file = await share(seeder, size, 14);
  const b = await joinRoom(browser, server, 'tiers', 'b', { storage: 'indexeddb' });
  expect(await b.page.evaluate(() => window.swarm.storage)).toBe('indexeddb');
  await startDownload(b, file.id);
  expect(await finish(b)).toEqual({ size, hash: file.hash });
  await reload(b, 'tiers', { storage: 'indexeddb' });
  expect(await kept(b, file.id)).toMatchObject({ complete: true, received: size });
  await b.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.complete), file.id);

  const m = await joinRoom(browser, server, 'tiers', 'm', { storage: 'memory' });
  expect(await m.page.evaluate(() => window.swarm.storage)).toBe('memory');
  await startDownload(m, file.id);
  expect(await finish(m)).toEqual({ size, hash: file.hash });
  expect(await m.page.evaluate(async () => window.swarm.storageEstimate())).toEqual({ quota: 512 * MiB, usage: size });
  await reload(m, 'tiers', { storage: 'memory' });
  expect(await m.page.evaluate(() => window.swarm.stored())).toEqual([]);

  const bad = await m.page.evaluate(async () => {
    const { Swarm } = await import('/pkg/client_wasm.js');
    try { await Swarm.join(location.origin, 'tiers', { storage: 'disk' }); return null; } catch (err) { return { code: err.code, message: err.message }; }
  });
  expect(bad).toMatchObject({ code: 'invalid-option' });
  expect(bad.message).toContain('storage');
});

test('an insecure context (plain http:// from a LAN address): chat and a 12 MiB file work, downloads go to IndexedDB, the page says what is limited', async ({ browser }) => {
  const lan = await startServer([], '10.77.0.1:0');
  try {
    expect(lan.url).toMatch(/^http:\/\/10\.77\.0\.1:/);
    const a = await joinRoom(browser, lan, 'lan', 'lan-a');
    const b = await joinRoom(browser, lan, 'lan', 'lan-b');
    await waitForPeers(a, [b.id]);
    await waitForPeers(b, [a.id]);
    const context = await b.page.evaluate(() => ({
      secure: window.isSecureContext,
      subtle: !!(window.crypto && window.crypto.subtle),
      storage: window.swarm.storage,
    }));
    expect(context).toEqual({ secure: false, subtle: false, storage: 'indexeddb' });
    await expect(b.page.locator('#insecure-notice')).toBeVisible();
    await expect(b.page.locator('#insecure-limits')).toContainText('IndexedDB');
    await expect(b.page.locator('#insecure-limits')).toContainText('camera');
    await expect(b.page.locator('#camera')).toBeDisabled();
    await b.page.screenshot({ path: 'artifacts/insecure-notice.png' });

    await a.page.evaluate((id) => window.swarm.send(id, 'hello over plain http'), b.id);
    await b.page.waitForFunction(() => window.events.some((e) => e.type === 'message' && e.data === 'hello over plain http'));

    const file = await share(a, 12 * MiB, 15);
    await startDownload(b, file.id);
    expect(await finish(b)).toEqual({ size: 12 * MiB, hash: file.hash });
    expect(file.hash).toMatch(/^fnv:/);

    // No service worker: a file that is not WebM cannot stream, and the error says why.
    const streaming = await thrown(b, (id) => window.swarm.streamUrl(id), file.id);
    expect(streaming).toMatchObject({ code: 'streaming-unavailable' });
    expect(streaming.message).toContain('service worker');
    expect(streaming.message).toContain('not WebM');
    // A WebM plays through MediaSource while it downloads.
    await a.page.evaluate(() => {
      const input = document.createElement('input');
      input.type = 'file';
      input.id = 'clip-input';
      document.body.append(input);
    });
    await a.page.setInputFiles('#clip-input', testClip());
    const clipId = await a.page.evaluate(async () => {
      window.swarm._capUpload(256 * 1024);
      return window.swarm.shareFile(document.getElementById('clip-input').files[0]);
    });
    await b.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), clipId);
    const url = await b.page.evaluate(async (id) => {
      const url = await window.swarm.streamUrl(id);
      const video = document.createElement('video');
      video.id = 'player';
      video.muted = true;
      video.src = url;
      document.body.append(video);
      await video.play();
      return url;
    }, clipId);
    expect(url).toMatch(/^blob:/);
    await b.page.waitForFunction(() => document.getElementById('player').currentTime > 2, null, { timeout: 30_000 });
    const playing = await b.page.evaluate((id) => ({
      complete: window.swarm.files().find((f) => f.id === id).complete,
      error: document.getElementById('player').error,
    }), clipId);
    expect(playing).toEqual({ complete: false, error: null });
    await b.page.evaluate(() => document.getElementById('player').remove());
    // The kept download survives a reload here too (IndexedDB).
    await reload(b, 'lan');
    expect(await kept(b, file.id)).toMatchObject({ complete: true, received: 12 * MiB });
  } finally {
    await lan.stop();
  }
});
