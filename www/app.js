// The demo page, built only on the public Swarm API of the WASM client.
import init, { Swarm } from './pkg/client_wasm.js';

const $ = (id) => document.getElementById(id);
const short = (id) => id.slice(0, 8);

/** A colour derived from a peer id, so each peer is recognisable at a glance. */
function colour(id, lightness = 50) {
  return `hsl(${parseInt(id.slice(0, 4), 16) % 360} 65% ${lightness}%)`;
}

function show(section) {
  for (const name of ['lobby', 'room', 'failure']) $(name).hidden = name !== section;
}

function setStatus(state, text) {
  $('status').dataset.state = state;
  $('status').textContent = text;
}

/**
 * The page's hash: `#demo`, `#demo/contentId` to open a file, and `?k=secret` after either for
 * a secret room. The fragment never reaches the server, so neither does the secret.
 */
function parseHash() {
  const [path, query = ''] = location.hash.slice(1).split('?');
  const [room = '', content = ''] = path.split('/');
  return { room: decodeURIComponent(room), content, secret: new URLSearchParams(query).get('k') || '' };
}

function roomFromHash() { return parseHash().room; }
function contentFromHash() { return parseHash().content; }
function secretFromHash() { return parseHash().secret; }

/** A link to this room (and to content `id` in it), with the secret of a secret room. */
function roomLink(id = '') {
  const secret = swarm && swarm.secret ? `?k=${encodeURIComponent(swarm.secret)}` : '';
  return `${location.origin}${location.pathname}#${encodeURIComponent(swarm.room)}${id ? `/${id}` : ''}${secret}`;
}

/** A fresh secret: 128 random bits in base64url. */
function newSecret() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

let swarm = null;

// ---- what this origin can do ----

/** What an insecure context (plain http:// from a LAN address) lacks, in words. */
function limits() {
  const missing = [];
  if (!(navigator.storage && navigator.storage.getDirectory)) missing.push('downloads are kept in IndexedDB instead of the faster Origin Private File System');
  if (!(window.crypto && crypto.subtle)) missing.push('pieces are checked with the SHA-256 in WebAssembly (slower)');
  if (!navigator.serviceWorker) missing.push('only WebM media plays while it downloads (other media once downloaded)');
  if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)) missing.push('camera, microphone and screen sharing are off');
  return missing;
}

function showContextNotice() {
  if (window.isSecureContext) return;
  $('insecure-host').textContent = location.host;
  $('insecure-limits').textContent = `but ${limits().join('; ')}.`;
  $('insecure-notice').hidden = false;
}

/** Media buttons only where the browser lets the page capture. */
function offerMedia() {
  const devices = navigator.mediaDevices;
  const can = { camera: devices && devices.getUserMedia, microphone: devices && devices.getUserMedia, screen: devices && devices.getDisplayMedia };
  for (const [kind, ok] of Object.entries(can)) {
    $(kind).disabled = !ok;
    if (!ok) $(kind).title = window.isSecureContext ? 'this browser cannot capture media' : 'needs HTTPS (an insecure context cannot capture media)';
  }
}
/** Downloads started on this page, by content id: {dl, progress, error, blob}. */
const downloads = new Map();

function renderPeers() {
  const list = $('peer-list');
  const peers = swarm ? swarm.peers() : [];
  list.replaceChildren(...peers.map((id) => {
    const li = document.createElement('li');
    li.dataset.peerId = id;
    li.title = id;
    const avatar = document.createElement('span');
    avatar.className = 'avatar';
    avatar.style.background = colour(id);
    const name = document.createElement('code');
    name.textContent = short(id);
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.title = 'data channel open';
    li.append(avatar, name, dot);
    return li;
  }));
  $('peer-count').textContent = String(peers.length);
  $('no-peers').hidden = peers.length > 0;
}

function log(kind, from, text) {
  const li = document.createElement('li');
  li.className = kind;
  if (from) {
    const who = document.createElement('span');
    who.className = 'from';
    who.style.color = colour(from, 38);
    who.textContent = kind === 'mine' ? 'you' : short(from);
    who.title = from;
    li.append(who);
  }
  li.append(document.createTextNode(text));
  $('chat-log').append(li);
  $('chat-log').scrollTop = $('chat-log').scrollHeight;
}

async function join(room, secret) {
  show('room');
  $('room-name').textContent = room;
  $('secret-badge').hidden = !secret;
  $('my-id').textContent = '…';
  $('chat-log').replaceChildren();
  setStatus('joining', 'joining…');
  try {
    // Offers and answers must be signed by the peers' own keys, so the server cannot put
    // itself between two peers; a secret room also hides its name and every signal from it.
    swarm = await Swarm.join(location.origin, room, secret ? { requireSigned: true, secret } : { requireSigned: true });
    swarm.secret = secret;
  } catch (err) {
    setStatus('failed', 'not connected');
    $('failure-message').textContent = `${err.message}${err.code ? ` (${err.code})` : ''}`;
    show('failure');
    return;
  }
  $('my-id').textContent = swarm.id;
  $('my-id').title = swarm.id;
  setStatus('connected', `in room ${room}`);
  swarm.on('server', (state) => {
    if (state === 'reconnecting') {
      setStatus('joining', `in room ${room} · server lost, peers still connected, reconnecting…`);
      log('system', null, 'lost the signalling server: peer connections carry on');
    } else {
      setStatus('connected', `in room ${room}`);
      log('system', null, 'back in touch with the signalling server');
    }
  });
  swarm.on('peer-joined', (id) => { renderPeers(); log('system', null, `${short(id)} joined`); });
  swarm.on('peer-left', (id) => { renderPeers(); log('system', null, `${short(id)} left`); });
  swarm.on('peer-rejected', (id, reason) => {
    log('system', null, `refused a connection claimed to be from ${short(id)} (${reason}): its offer or answer was not signed by its key${secret ? ' or not sealed with this room\'s secret' : ''}`);
  });
  swarm.on('message', (from, data) => {
    const text = typeof data === 'string' ? data : `[${data.length} bytes]`;
    log('theirs', from, text);
  });
  swarm.on('stream', (peer, stream) => addTile(`remote-${peer}-${stream.id}`, stream, short(peer), peer, false));
  swarm.on('stream-ended', (peer, streamId) => removeTile(`remote-${peer}-${streamId}`));
  swarm.on('files', scheduleFiles);
  swarm.on('peer-joined', scheduleFiles);
  swarm.on('peer-left', scheduleFiles);
  swarm.on('stored', scheduleStored);
  renderPeers();
  renderFiles();
  renderStored();
  askPersistence();
  const wanted = contentFromHash();
  if (wanted) openLinkedFile(wanted);
}

// ---- live media ----

/** Local streams being published, by kind: camera, microphone, screen. */
const local = {};

function addTile(key, stream, label, peer, isLocal) {
  removeTile(key);
  const tile = document.createElement('div');
  tile.className = `tile${isLocal ? ' local' : ''}`;
  tile.dataset.key = key;
  if (peer) tile.dataset.peerId = peer;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = isLocal; // never play our own microphone back
  video.srcObject = stream;
  const name = document.createElement('span');
  name.className = 'tile-label';
  name.textContent = label;
  name.style.borderLeft = peer ? `3px solid ${colour(peer)}` : '';
  tile.append(video, name);
  if (!isLocal && stream.getAudioTracks().length > 0) {
    const mute = button('Mute', () => {
      video.muted = !video.muted;
      mute.textContent = video.muted ? 'Unmute' : 'Mute';
    });
    mute.className = 'tile-mute';
    tile.append(mute);
  }
  $('video-grid').append(tile);
}

function removeTile(key) {
  for (const tile of $('video-grid').querySelectorAll('.tile')) {
    if (tile.dataset.key === key) tile.remove();
  }
}

function stopLocal(kind) {
  const stream = local[kind];
  if (!stream) return;
  if (swarm) swarm.unpublish(stream);
  for (const track of stream.getTracks()) track.stop();
  delete local[kind];
  removeTile(`local-${kind}`);
  $(kind).classList.remove('on');
  $(kind).textContent = { camera: 'Camera', microphone: 'Microphone', screen: 'Share screen' }[kind];
  refreshMuteButton();
}

async function toggleLocal(kind) {
  if (local[kind]) return stopLocal(kind);
  try {
    const stream = kind === 'screen'
      ? await navigator.mediaDevices.getDisplayMedia({ video: true, audio: true })
      : await navigator.mediaDevices.getUserMedia(kind === 'camera' ? { video: true, audio: true } : { audio: true });
    local[kind] = stream;
    // Stopped from the browser's own UI (e.g. "Stop sharing"): unpublish too.
    for (const track of stream.getTracks()) track.addEventListener('ended', () => stopLocal(kind));
    await swarm.publish(stream);
    if (stream.getVideoTracks().length > 0) addTile(`local-${kind}`, stream, `you (${kind})`, null, true);
    $(kind).classList.add('on');
    $(kind).textContent = `Stop ${kind}`;
    refreshMuteButton();
  } catch (err) {
    log('system', null, `${kind}: ${err.message}`);
  }
}

for (const kind of ['camera', 'microphone', 'screen']) {
  $(kind).addEventListener('click', () => toggleLocal(kind));
}

/** Mutes or unmutes every microphone track we publish (the peers get silence). */
let selfMuted = false;
function refreshMuteButton() {
  const audio = Object.values(local).flatMap((s) => s.getAudioTracks());
  $('mute-self').disabled = audio.length === 0;
  $('mute-self').textContent = selfMuted ? 'Unmute me' : 'Mute me';
  for (const track of audio) track.enabled = !selfMuted;
}
$('mute-self').addEventListener('click', () => { selfMuted = !selfMuted; refreshMuteButton(); });

// ---- files ----

function formatBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function formatEta(seconds) {
  if (!isFinite(seconds) || seconds <= 0) return '';
  if (seconds < 60) return `${Math.ceil(seconds)} s left`;
  return `${Math.floor(seconds / 60)} min ${Math.ceil(seconds % 60)} s left`;
}

let filesScheduled = false;
function scheduleFiles() {
  if (filesScheduled) return;
  filesScheduled = true;
  requestAnimationFrame(() => { filesScheduled = false; renderFiles(); });
}

async function shareFiles(fileList) {
  for (const file of fileList) {
    try {
      const id = await swarm.shareFile(file, { keep: $('keep-copy').checked });
      log('system', null, `sharing ${file.name} (${formatBytes(file.size)})`);
      void id;
    } catch (err) {
      log('system', null, `could not share ${file.name}: ${err.message}`);
    }
  }
  scheduleFiles();
}

function startDownload(id) {
  if (downloads.has(id) && !downloads.get(id).error) return downloads.get(id);
  let dl;
  try {
    dl = swarm.download(id);
  } catch (err) {
    log('system', null, `cannot download: ${err.message}`);
    return null;
  }
  const entry = { dl, progress: dl.progress, error: null, blob: null };
  downloads.set(id, entry);
  dl.on('progress', (p) => { entry.progress = p; scheduleFiles(); });
  dl.on('bad-peer', (peer, reason) => log('system', null, `dropped ${short(peer)}: ${reason}`));
  dl.blob().then((blob) => { entry.blob = blob; scheduleFiles(); })
    .catch((err) => { entry.error = err; scheduleFiles(); });
  scheduleFiles();
  return entry;
}

/** Open media players by content id: they play while the file downloads. */
const players = new Map();

async function togglePlayer(info) {
  if (players.has(info.id)) {
    const old = players.get(info.id);
    old.pause();
    old.removeAttribute('src');
    players.delete(info.id);
    scheduleFiles();
    return;
  }
  const media = document.createElement(info.mime.startsWith('audio/') ? 'audio' : 'video');
  media.className = 'player';
  media.controls = true;
  media.autoplay = true;
  players.set(info.id, media);
  scheduleFiles();
  try {
    media.src = await swarm.streamUrl(info.id);
    if (!downloads.has(info.id) && !info.complete) startDownload(info.id);
  } catch (err) {
    if (err.code !== 'streaming-unavailable') {
      log('system', null, `cannot play ${info.name}: ${err.message}`);
      players.delete(info.id);
      scheduleFiles();
      return;
    }
    // No streaming here (no service worker in an insecure context): play it once it is in.
    log('system', null, `${info.name} will play once downloaded (${err.message})`);
    const entry = startDownload(info.id);
    const blob = entry ? await entry.dl.blob().catch(() => null) : null;
    if (blob && players.get(info.id) === media) media.src = URL.createObjectURL(blob);
  }
}

/** Opens `#room/contentId`: downloads that file as soon as a peer offers it, or at once if
 *  this browser kept part of it (it resumes). */
function openLinkedFile(id) {
  if (swarm.stored().some((f) => f.id === id && f.kind === 'download')) {
    startDownload(id);
    return;
  }
  const tryStart = () => {
    if (swarm && swarm.files().some((f) => f.id === id && (f.sources > 0 || f.complete))) {
      startDownload(id);
      swarm.off('files', tryStart);
    }
  };
  swarm.on('files', tryStart);
  tryStart();
  // In a large room the file may not have been announced to us: ask the structured layer.
  if (swarm && !swarm.files().some((f) => f.id === id)) swarm.lookup(id);
}

async function saveFile(info, blob) {
  if (window.showSaveFilePicker) {
    try {
      const handle = await window.showSaveFilePicker({ suggestedName: info.name });
      const writable = await handle.createWritable();
      await blob.stream().pipeTo(writable);
      return;
    } catch (err) {
      if (err.name === 'AbortError') return;
    }
  }
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = info.name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function button(text, onClick, secondary = false) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  if (secondary) b.className = 'secondary';
  b.addEventListener('click', onClick);
  return b;
}

/** Draws which pieces a holder has: each pixel column covers a range of pieces. */
function drawPieces(canvas, bits, count, color) {
  const width = canvas.clientWidth || 300;
  canvas.width = width;
  canvas.height = 10;
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, width, 10);
  if (count === 0) return;
  ctx.fillStyle = color;
  const has = (i) => (bits[i >> 3] & (0x80 >> (i & 7))) !== 0;
  for (let x = 0; x < width; x++) {
    const from = Math.floor((x * count) / width);
    const to = Math.max(from + 1, Math.floor(((x + 1) * count) / width));
    let n = 0;
    for (let i = from; i < to; i++) if (has(i)) n++;
    if (n > 0) {
      ctx.globalAlpha = 0.25 + 0.75 * (n / (to - from));
      ctx.fillRect(x, 0, 1, 10);
    }
  }
  ctx.globalAlpha = 1;
}

function pieceMap(id) {
  const map = swarm.pieceMap(id);
  if (!map) return null;
  const grid = document.createElement('div');
  grid.className = 'piece-map';
  const rows = [['you', map.have, 'hsl(145 65% 38%)']];
  for (const peer of map.peers) rows.push([short(peer.id), peer.have, colour(peer.id)]);
  const draws = [];
  for (const [label, bits, color] of rows) {
    const name = document.createElement('span');
    name.textContent = label;
    const canvas = document.createElement('canvas');
    grid.append(name, canvas);
    draws.push(() => drawPieces(canvas, bits, map.count, color));
  }
  requestAnimationFrame(() => draws.forEach((draw) => draw()));
  return grid;
}

function renderFiles() {
  if (!swarm) return;
  const files = swarm.files();
  const kept = new Map(swarm.stored().filter((f) => f.kind === 'download').map((f) => [f.id, f]));
  $('no-files').hidden = files.length > 0;
  $('file-list').replaceChildren(...files.map((info) => {
    const entry = downloads.get(info.id);
    const partial = !entry && !info.complete ? kept.get(info.id) : null;
    const li = document.createElement('li');
    li.className = 'file';
    li.dataset.contentId = info.id;
    const done = info.complete || (entry && entry.blob);
    if (done) li.classList.add('complete');

    const head = document.createElement('div');
    head.className = 'file-head';
    const name = document.createElement('span');
    name.className = 'file-name';
    name.textContent = info.name;
    const meta = document.createElement('span');
    meta.className = 'file-meta';
    meta.textContent = `${formatBytes(info.size)} · ${info.sources} source${info.sources === 1 ? '' : 's'}`;
    const actions = document.createElement('span');
    actions.className = 'file-actions';
    if (!done && (!entry || entry.error)) {
      actions.append(button(partial ? 'Resume' : 'Download', () => startDownload(info.id)));
    }
    if (entry && !done && !entry.error) {
      actions.append(button('Cancel', () => entry.dl.cancel(), true));
    }
    if (/^(video|audio)\//.test(info.mime)) {
      actions.append(button(players.has(info.id) ? 'Close player' : 'Play', () => togglePlayer(info)));
    }
    if (done) {
      actions.append(button('Save', async () => {
        const blob = entry?.blob || await swarm.download(info.id).blob();
        await saveFile(info, blob);
      }));
    }
    actions.append(button('Copy link', async () => {
      const link = roomLink(info.id);
      try { await navigator.clipboard.writeText(link); log('system', null, 'link copied'); } catch { log('system', null, link); }
    }, true));
    head.append(name, meta, actions);
    li.append(head);

    const received = done ? info.size : entry ? entry.progress.received : partial ? partial.received : 0;
    const fraction = info.size > 0 ? received / info.size : (done ? 1 : 0);
    const bar = document.createElement('div');
    bar.className = 'progress';
    const fill = document.createElement('div');
    fill.style.width = `${(fraction * 100).toFixed(1)}%`;
    bar.append(fill);
    const status = document.createElement('div');
    status.className = 'file-status';
    const parts = [];
    if (done) {
      parts.push(info.complete && !entry ? 'seeding' : 'complete, seeding');
    } else if (entry && entry.error) {
      parts.push(`failed: ${entry.error.message}`);
    } else if (entry) {
      const p = entry.progress;
      parts.push(`${formatBytes(p.received)} of ${formatBytes(p.total)}`);
      parts.push(`${formatBytes(p.bytesPerSecond)}/s`);
      parts.push(`${p.peers} peer${p.peers === 1 ? '' : 's'}`);
      parts.push(formatEta((p.total - p.received) / p.bytesPerSecond));
    } else if (partial) {
      parts.push(`${formatBytes(partial.received)} of ${formatBytes(info.size)} kept in this browser`);
    } else {
      parts.push('not downloaded');
    }
    for (const text of parts.filter(Boolean)) {
      const span = document.createElement('span');
      span.textContent = text;
      status.append(span);
    }
    li.append(bar, status);
    const map = pieceMap(info.id);
    if (map) li.append(map);
    const player = players.get(info.id);
    if (player) li.append(player);
    return li;
  }));
}

// ---- what this browser keeps ----

let storedScheduled = false;
function scheduleStored() {
  if (storedScheduled) return;
  storedScheduled = true;
  requestAnimationFrame(() => { storedScheduled = false; renderStored(); });
}

const TIER_NAMES = {
  opfs: 'in the Origin Private File System',
  indexeddb: 'in IndexedDB',
  memory: 'in memory only: gone on reload',
};
let persisted = null;

async function askPersistence() {
  if (!(navigator.storage && navigator.storage.persist)) return;
  try {
    persisted = (await navigator.storage.persisted()) || (await navigator.storage.persist());
  } catch {
    persisted = false;
  }
  scheduleStored();
}

async function renderStored() {
  if (!swarm) return;
  const stored = swarm.stored();
  const tier = swarm.storage;
  $('storage-tier').textContent = tier ? `${TIER_NAMES[tier]}${persisted === false ? ' · the browser may clear it when space runs low' : persisted ? ' · kept until you delete it' : ''}` : 'no storage';
  $('no-stored').hidden = stored.length > 0;
  $('stored-list').replaceChildren(...stored.map((f) => {
    const li = document.createElement('li');
    li.dataset.contentId = f.id;
    li.className = f.complete && f.kind === 'download' ? 'complete' : '';
    const name = document.createElement('span');
    name.className = 'file-name';
    name.textContent = f.name;
    const meta = document.createElement('span');
    meta.className = 'file-meta';
    let state;
    if (f.kind === 'shared') state = f.available ? 'shared from your disk' : 'not available until shared again';
    else if (f.complete) state = 'complete, offered to the room';
    else if (!f.available) state = `checking ${formatBytes(f.received)}…`;
    else state = `${formatBytes(f.received)} of ${formatBytes(f.size)}`;
    meta.textContent = `${formatBytes(f.size)} · ${state}`;
    const actions = document.createElement('span');
    actions.className = 'file-actions';
    if (f.kind === 'download' && !f.complete && !downloads.has(f.id)) {
      actions.append(button('Resume', () => startDownload(f.id)));
    }
    actions.append(button('Delete', async () => {
      try {
        await swarm.forget(f.id);
        downloads.delete(f.id);
        log('system', null, `deleted ${f.name}`);
      } catch (err) {
        log('system', null, `cannot delete ${f.name}: ${err.message}`);
      }
      scheduleFiles();
    }, true));
    const bar = document.createElement('div');
    bar.className = 'progress';
    const fill = document.createElement('div');
    fill.style.width = `${(f.size > 0 ? (100 * f.received) / f.size : 100).toFixed(1)}%`;
    bar.append(fill);
    li.append(name, meta, actions, bar);
    return li;
  }));
  const estimate = await swarm.storageEstimate().catch(() => null);
  if (estimate && estimate.quota > 0) {
    $('quota-fill').style.width = `${Math.min(100, (100 * estimate.usage) / estimate.quota).toFixed(1)}%`;
    $('storage-quota').textContent = `${formatBytes(estimate.usage)} used of ${formatBytes(estimate.quota)} this site may use`;
  } else {
    $('storage-quota').textContent = 'the browser does not say how much this site may store';
  }
}

const dropZone = $('drop-zone');
dropZone.addEventListener('dragover', (event) => { event.preventDefault(); dropZone.classList.add('over'); });
dropZone.addEventListener('dragleave', () => dropZone.classList.remove('over'));
dropZone.addEventListener('drop', (event) => {
  event.preventDefault();
  dropZone.classList.remove('over');
  if (swarm) shareFiles(event.dataTransfer.files);
});
$('file-input').addEventListener('change', (event) => {
  if (swarm) shareFiles(event.target.files);
  event.target.value = '';
});

function leave() {
  downloads.clear();
  players.clear();
  for (const kind of Object.keys(local)) stopLocal(kind);
  $('video-grid').replaceChildren();
  if (swarm) {
    swarm.leave();
    swarm.free();
    swarm = null;
  }
}

async function route() {
  leave();
  const room = roomFromHash();
  if (room) {
    await join(room, secretFromHash());
  } else {
    setStatus('idle', 'not in a room');
    show('lobby');
    $('room-input').focus();
  }
}

$('join-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const room = encodeURIComponent($('room-input').value.trim());
  location.hash = $('secret-input').checked ? `${room}?k=${newSecret()}` : room;
});

$('chat-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('chat-input').value;
  if (!text || !swarm) return;
  try {
    swarm.broadcast(text);
    log('mine', swarm.id, text);
    $('chat-input').value = '';
  } catch (err) {
    log('system', null, `not sent: ${err.message}`);
  }
});

$('copy-link').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(roomLink());
    $('copy-link').textContent = 'Copied';
  } catch {
    $('copy-link').textContent = roomLink();
  }
  setTimeout(() => { $('copy-link').textContent = 'Copy link'; }, 1500);
});

$('retry').addEventListener('click', route);
window.addEventListener('hashchange', () => {
  // `#room/contentId` within the same room only opens the file.
  if (swarm && roomFromHash() === swarm.room && secretFromHash() === (swarm.secret || '')) {
    const wanted = contentFromHash();
    if (wanted) openLinkedFile(wanted);
    return;
  }
  route();
});
window.addEventListener('pagehide', leave);

showContextNotice();
offerMedia();
await init();
await route();
