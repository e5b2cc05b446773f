// Live media between pages, with Chromium's fake camera and microphone.
import { test, expect, joinRoom, waitForPeers, events } from './harness.js';

async function mesh(browser, server, room, count) {
  const members = [];
  for (let i = 0; i < count; i++) members.push(await joinRoom(browser, server, room, `${room}-${i}`));
  for (const m of members) await waitForPeers(m, members.filter((o) => o !== m).map((o) => o.id));
  return members;
}

/** Opens the fake camera and microphone on `member` and publishes them; returns the stream id. */
async function publishCamera(member) {
  return member.page.evaluate(async () => {
    window.local = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    await window.swarm.publish(window.local);
    return window.local.id;
  });
}

/** Waits until `member` decodes video frames and receives audio from `from`. */
async function expectMediaFrom(member, from) {
  await member.page.waitForFunction(async (from) => {
    const report = await window.swarm.getStats(from);
    let frames = 0;
    let audio = 0;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
      if (s.type === 'inbound-rtp' && s.kind === 'audio') audio += s.packetsReceived || 0;
    });
    return frames > 0 && audio > 0;
  }, from, { timeout: 30_000, polling: 250 });
}

test('a published camera reaches two pages and a late joiner, and unpublish ends it', async ({ browser, server }) => {
  const [a, b, c] = await mesh(browser, server, 'camera', 3);
  const streamId = await publishCamera(a);
  for (const member of [b, c]) {
    await member.page.waitForFunction(() => window.events.some((e) => e.type === 'stream'), null, { timeout: 20_000 });
    const started = (await events(member)).filter((e) => e.type === 'stream');
    expect(started).toEqual([{ type: 'stream', peer: a.id, id: streamId, kinds: ['audio', 'video'] }]);
    await expectMediaFrom(member, a.id);
  }

  const late = await joinRoom(browser, server, 'camera', 'camera-late');
  await waitForPeers(late, [a.id, b.id, c.id]);
  await late.page.waitForFunction(() => window.events.some((e) => e.type === 'stream'), null, { timeout: 20_000 });
  expect((await events(late)).filter((e) => e.type === 'stream')).toEqual([
    { type: 'stream', peer: a.id, id: streamId, kinds: ['audio', 'video'] },
  ]);
  await expectMediaFrom(late, a.id);

  await a.page.evaluate(() => window.swarm.unpublish(window.local));
  for (const member of [b, c, late]) {
    await member.page.waitForFunction(
      ([peer, id]) => window.events.some((e) => e.type === 'stream-ended' && e.peer === peer && e.id === id),
      [a.id, streamId],
      { timeout: 20_000 },
    );
  }
  // The data channels are untouched by all the renegotiation.
  await b.page.evaluate((id) => window.swarm.send(id, 'after media'), c.id);
  await expect.poll(async () => (await events(c)).some((e) => e.data === 'after media')).toBe(true);
});

test('two pages publishing at the same moment do not glare', async ({ browser, server }) => {
  const [a, b] = await mesh(browser, server, 'glare', 2);
  const [idA, idB] = await Promise.all([publishCamera(a), publishCamera(b)]);
  await expectMediaFrom(a, b.id);
  await expectMediaFrom(b, a.id);
  const streams = async (member) => (await events(member)).filter((e) => e.type.startsWith('stream'));
  await expect.poll(() => streams(a)).toEqual([{ type: 'stream', peer: b.id, id: idB, kinds: ['audio', 'video'] }]);
  await expect.poll(() => streams(b)).toEqual([{ type: 'stream', peer: a.id, id: idA, kinds: ['audio', 'video'] }]);
});

test('a peer that leaves ends its streams on the others', async ({ browser, server }) => {
  const [a, b] = await mesh(browser, server, 'leaving-media', 2);
  const streamId = await publishCamera(a);
  await expectMediaFrom(b, a.id);
  // Frames can be decoded a little before the browser delivers the `track` event (it comes
  // when setRemoteDescription resolves); a peer that leaves before that was never reported
  // as a stream, so there would be nothing to end. Wait for the stream first.
  await b.page.waitForFunction(
    ([peer, id]) => window.events.some((e) => e.type === 'stream' && e.peer === peer && e.id === id),
    [a.id, streamId],
    { timeout: 10_000 },
  );
  await a.context.close();
  await b.page.waitForFunction(
    ([peer, id]) => window.events.some((e) => e.type === 'stream-ended' && e.peer === peer && e.id === id),
    [a.id, streamId],
    { timeout: 10_000 },
  );
});
