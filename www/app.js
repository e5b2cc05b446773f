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

/** The room named by the page's hash: `#demo` (later `#demo/contentId`). */
function roomFromHash() {
  return decodeURIComponent(location.hash.slice(1).split('/')[0] || '');
}

let swarm = null;

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

async function join(room) {
  show('room');
  $('room-name').textContent = room;
  $('my-id').textContent = '…';
  $('chat-log').replaceChildren();
  setStatus('joining', 'joining…');
  try {
    swarm = await Swarm.join(location.origin, room);
  } catch (err) {
    setStatus('failed', 'not connected');
    $('failure-message').textContent = `${err.message}${err.code ? ` (${err.code})` : ''}`;
    show('failure');
    return;
  }
  $('my-id').textContent = swarm.id;
  $('my-id').title = swarm.id;
  setStatus('connected', `in room ${room}`);
  swarm.on('peer-joined', (id) => { renderPeers(); log('system', null, `${short(id)} joined`); });
  swarm.on('peer-left', (id) => { renderPeers(); log('system', null, `${short(id)} left`); });
  swarm.on('message', (from, data) => {
    const text = typeof data === 'string' ? data : `[${data.length} bytes]`;
    log('theirs', from, text);
  });
  renderPeers();
}

function leave() {
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
    await join(room);
  } else {
    setStatus('idle', 'not in a room');
    show('lobby');
    $('room-input').focus();
  }
}

$('join-form').addEventListener('submit', (event) => {
  event.preventDefault();
  location.hash = encodeURIComponent($('room-input').value.trim());
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
    await navigator.clipboard.writeText(location.href);
    $('copy-link').textContent = 'Copied';
  } catch {
    $('copy-link').textContent = location.href;
  }
  setTimeout(() => { $('copy-link').textContent = 'Copy link'; }, 1500);
});

$('retry').addEventListener('click', route);
window.addEventListener('hashchange', route);
window.addEventListener('pagehide', leave);

await init();
await route();
