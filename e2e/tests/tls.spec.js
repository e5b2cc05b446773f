// HTTPS on a LAN in one flag: a server started with --tls-self-signed on every address of the
// namespace, pages opened at https://<its non-loopback address>:PORT/ in browser contexts told
// to accept that certificate, and every feature working there: a secure context, chat, a file
// transfer, and a camera; and streaming playback through the service worker, which needs the
// certificate trusted, in a Chromium that trusts exactly this certificate.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { test, expect, joinRoom, waitForPeers, events, share, startDownload, finish, testClip } from './harness.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MiB = 1024 * 1024;

/**
 * Starts target/release/signal-server on 0.0.0.0 with --tls-self-signed, keeping its
 * certificate in `dir`; resolves once it prints `listening on https://…`, with every line it
 * printed before.
 */
async function startSelfSigned(dir) {
  const child = spawn(
    path.join(root, 'target/release/signal-server'),
    ['--listen', '0.0.0.0:0', '--www', path.join(root, 'www'), '--tls-self-signed', '--tls-dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } },
  );
  child.stderr.on('data', (chunk) => process.stderr.write(`[server] ${chunk}`));
  const lines = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('signal-server did not start in 10 s')), 10_000);
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      if (/^listening on https:\/\/\S+$/m.test(out)) {
        clearTimeout(timer);
        resolve(out.split('\n').filter(Boolean));
      }
    });
    child.on('exit', (code) => reject(new Error(`signal-server exited with ${code}: ${out}`)));
  });
  const line = (prefix) => lines.find((l) => l.startsWith(prefix))?.slice(prefix.length);
  return {
    lines,
    child,
    fingerprint: line('certificate SHA-256 '),
    urls: lines.filter((l) => l.startsWith('open ')).map((l) => l.slice('open '.length)),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** The namespace's IPv4 addresses other than loopback (10.77.0.x, see scripts/netns.sh). */
function lanAddresses() {
  return Object.values(os.networkInterfaces()).flat()
    .filter((a) => a.family === 'IPv4' && !a.internal)
    .map((a) => a.address);
}

/** `browser`, with every context it opens told to accept the server's self-signed certificate. */
function accepting(browser) {
  return { newContext: (options = {}) => browser.newContext({ ignoreHTTPSErrors: true, ...options }) };
}

/** The certificate the server at `url` presents, as Node sees it (no verification). */
async function servedCertificate(url) {
  const { hostname, port } = new URL(url);
  const socket = tls.connect({ host: hostname, port: Number(port), rejectUnauthorized: false });
  await once(socket, 'secureConnect');
  const cert = socket.getPeerX509Certificate();
  socket.destroy();
  return cert;
}

/** SHA-256 of the certificate's public key (SubjectPublicKeyInfo) in base64, the form Chromium's
 * --ignore-certificate-errors-spki-list takes. */
function spkiHash(pemFile) {
  const spki = new crypto.X509Certificate(fs.readFileSync(pemFile)).publicKey.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(spki).digest('base64');
}

/** A browser launched by the test itself, whose pages' errors go to `errors` (the harness
 * watches only the shared browser). */
function watched(browser, errors) {
  return {
    async newContext(options) {
      const context = await browser.newContext(options);
      context.on('page', (page) => {
        page.on('pageerror', (err) => errors.push(`${page.url()}: page error: ${err.message}`));
        page.on('console', (msg) => {
          if (/panicked at/.test(msg.text())) errors.push(`${page.url()}: ${msg.text()}`);
        });
      });
      return context;
    },
  };
}

let dir;
let server;
let lan; // { url } for the harness helpers: the https:// origin on the LAN address

test.beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'swarm-tls-'));
  server = await startSelfSigned(dir);
  const addresses = lanAddresses();
  expect(addresses.length, 'the namespace has a non-loopback address').toBeGreaterThan(0);
  const url = server.urls.find((u) => addresses.includes(new URL(u).hostname));
  expect(url, `one of ${server.urls} is on ${addresses}`).toBeTruthy();
  lan = { url: new URL(url).origin };
});

test.afterAll(async () => {
  await server?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('the page opens over https at the LAN address with the certificate the server printed', async ({ browser }) => {
  // Every address of the namespace is printed, loopback last as localhost.
  const { port } = new URL(lan.url);
  for (const address of lanAddresses()) expect(server.urls).toContain(`https://${address}:${port}/`);
  expect(server.urls.at(-1)).toBe(`https://localhost:${port}/`);

  // The printed fingerprint is the SHA-256 of the certificate kept on disk and served.
  const kept = new crypto.X509Certificate(fs.readFileSync(path.join(dir, 'cert.pem')));
  expect(server.fingerprint).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  expect(kept.fingerprint256).toBe(server.fingerprint);
  const served = await servedCertificate(lan.url);
  expect(served.fingerprint256).toBe(server.fingerprint);
  const host = new URL(lan.url).hostname;
  expect(served.subjectAltName.split(', ')).toContain(`IP Address:${host}`);
  expect(served.checkIP(host)).toBe(host);

  const context = await accepting(browser).newContext();
  const page = await context.newPage();
  const response = await page.goto(`${lan.url}/`);
  expect(response.status()).toBe(200);
  const security = await response.securityDetails();
  expect(security.subjectName).toBe(served.subject.match(/CN=(.*)/)[1]);
  expect(await page.evaluate(() => ({ secure: window.isSecureContext, protocol: location.protocol, subtle: !!crypto.subtle })))
    .toEqual({ secure: true, protocol: 'https:', subtle: true });
});

test('chat goes peer to peer between pages joined over wss', async ({ browser }) => {
  const b = accepting(browser);
  const a1 = await joinRoom(b, lan, 'tls-chat', 'tls-chat-a');
  const a2 = await joinRoom(b, lan, 'tls-chat', 'tls-chat-b');
  await waitForPeers(a1, [a2.id]);
  await waitForPeers(a2, [a1.id]);
  for (const member of [a1, a2]) {
    expect(await member.page.evaluate(() => ({ secure: window.isSecureContext, server: window.swarm.serverState })))
      .toEqual({ secure: true, server: 'connected' });
  }
  await a1.page.evaluate((to) => window.swarm.send(to, 'hello over https'), a2.id);
  await a2.page.evaluate(() => window.swarm.broadcast(new Uint8Array([1, 2, 3])));
  await a2.page.waitForFunction(() => window.events.some((e) => e.type === 'message'));
  await a1.page.waitForFunction(() => window.events.some((e) => e.type === 'message'));
  expect((await events(a2)).filter((e) => e.type === 'message'))
    .toEqual([{ type: 'message', from: a1.id, kind: 'string', data: 'hello over https' }]);
  expect((await events(a1)).filter((e) => e.type === 'message'))
    .toEqual([{ type: 'message', from: a2.id, kind: 'Uint8Array', data: [1, 2, 3] }]);
});

test('a file shared over https arrives byte-identical', async ({ browser }) => {
  test.setTimeout(120_000);
  const b = accepting(browser);
  const seeder = await joinRoom(b, lan, 'tls-file', 'tls-file-seeder');
  const leecher = await joinRoom(b, lan, 'tls-file', 'tls-file-leecher');
  await waitForPeers(leecher, [seeder.id]);
  const file = await share(seeder, 8 * MiB, 11);
  await startDownload(leecher, file.id);
  // The hash is taken with crypto.subtle, which exists only in a secure context.
  expect(await finish(leecher)).toEqual({ size: 8 * MiB, hash: file.hash });
});

test('a shared video plays through the streaming service worker in a Chromium that trusts the certificate', async ({ browser, playwright, launchOptions }) => {
  test.setTimeout(120_000);
  const clip = testClip();
  const seeder = await joinRoom(accepting(browser), lan, 'tls-movie', 'tls-movie-seeder');
  await seeder.page.evaluate(() => {
    const input = document.createElement('input');
    input.type = 'file';
    input.id = 'clip-input';
    document.body.append(input);
  });
  await seeder.page.setInputFiles('#clip-input', clip);
  const id = await seeder.page.evaluate(() => window.swarm.shareFile(document.getElementById('clip-input').files[0]));

  // The service worker needs the certificate trusted, not an exception: Chromium refuses to
  // register one for a site with a certificate error (after a user clicked through the
  // warning; under `ignoreHTTPSErrors` it is refused in some runs and not in others). So the
  // viewer is a Chromium that trusts exactly this certificate (its key's SHA-256), like a
  // device where it is installed as trusted.
  const trusting = await playwright.chromium.launch({
    ...launchOptions,
    args: [...(launchOptions.args || []), `--ignore-certificate-errors-spki-list=${spkiHash(path.join(dir, 'cert.pem'))}`],
  });
  const errors = [];
  try {
    const viewer = await joinRoom(watched(trusting, errors), lan, 'tls-movie', 'tls-movie-viewer');
    await waitForPeers(viewer, [seeder.id]);
    await viewer.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id), id);
    const url = await viewer.page.evaluate(async (id) => {
      const url = await window.swarm.streamUrl(id);
      const video = document.createElement('video');
      video.id = 'player';
      video.muted = true;
      video.src = url;
      document.body.append(video);
      video.play();
      return url;
    }, id);
    expect(url).toBe(`${lan.url}/stream/${id}`);
    await viewer.page.waitForFunction(() => document.getElementById('player').currentTime > 1, null, { timeout: 60_000, polling: 100 });
    expect(await viewer.page.evaluate(() => navigator.serviceWorker.controller?.scriptURL ?? null))
      .toBe(`${lan.url}/swarm-sw.js`);
    expect(await viewer.page.evaluate(() => document.getElementById('player').duration)).toBeGreaterThan(55);
  } finally {
    await trusting.close();
  }
  expect(errors, 'uncaught page errors in the trusting browser').toEqual([]);
});

test('a shared WebM plays while it downloads under a mere certificate exception too', async ({ browser }) => {
  test.setTimeout(120_000);
  const b = accepting(browser);
  const seeder = await joinRoom(b, lan, 'tls-exception', 'tls-exception-seeder');
  const viewer = await joinRoom(b, lan, 'tls-exception', 'tls-exception-viewer');
  await waitForPeers(viewer, [seeder.id]);
  await seeder.page.evaluate(() => {
    const input = document.createElement('input');
    input.type = 'file';
    input.id = 'clip-input';
    document.body.append(input);
  });
  await seeder.page.setInputFiles('#clip-input', testClip());
  const id = await seeder.page.evaluate(() => {
    window.swarm._capUpload(256 * 1024);
    return window.swarm.shareFile(document.getElementById('clip-input').files[0]);
  });
  await viewer.page.waitForFunction((id) => window.swarm.files().some((f) => f.id === id && f.sources > 0), id);
  // Through the service worker when Chromium registers it under the exception, through
  // MediaSource when it refuses: either way it plays long before the download ends.
  const url = await viewer.page.evaluate(async (id) => {
    const url = await window.swarm.streamUrl(id);
    const video = document.createElement('video');
    video.id = 'player';
    video.muted = true;
    video.src = url;
    document.body.append(video);
    video.play();
    return url;
  }, id);
  expect(url).toMatch(new RegExp(`^(${lan.url}/stream/${id}|blob:.*)$`));
  await viewer.page.waitForFunction(() => document.getElementById('player').currentTime > 2, null, { timeout: 60_000, polling: 100 });
  expect(await viewer.page.evaluate((id) => window.swarm.files().find((f) => f.id === id).complete, id)).toBe(false);
});

test('a camera published over https reaches the other page', async ({ browser }) => {
  const b = accepting(browser);
  const sender = await joinRoom(b, lan, 'tls-camera', 'tls-camera-sender');
  const receiver = await joinRoom(b, lan, 'tls-camera', 'tls-camera-receiver');
  await waitForPeers(sender, [receiver.id]);
  await waitForPeers(receiver, [sender.id]);
  // getUserMedia exists only in a secure context.
  const streamId = await sender.page.evaluate(async () => {
    window.local = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    await window.swarm.publish(window.local);
    return window.local.id;
  });
  await receiver.page.waitForFunction(() => window.events.some((e) => e.type === 'stream'), null, { timeout: 20_000 });
  expect((await events(receiver)).filter((e) => e.type === 'stream'))
    .toEqual([{ type: 'stream', peer: sender.id, id: streamId, kinds: ['audio', 'video'] }]);
  await receiver.page.waitForFunction(async (from) => {
    const report = await window.swarm.getStats(from);
    let frames = 0;
    let audio = 0;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
      if (s.type === 'inbound-rtp' && s.kind === 'audio') audio += s.packetsReceived || 0;
    });
    return frames > 0 && audio > 0;
  }, sender.id, { timeout: 30_000, polling: 250 });
});
