// Storage worker: keeps downloads, and what is needed to resume them after a reload, in the
// best storage the page's origin has. The client starts it from a Blob URL; every request
// carries a `seq` that the reply echoes.
//
// Tiers, best first (`init` picks the first that works, starting at the one asked for):
//   opfs      - Origin Private File System through synchronous access handles: each piece
//               goes to its offset on disk as it arrives; memory stays bounded whatever the
//               file size. Needs a secure context (https://, or http://localhost).
//   indexeddb - one record per piece (a Blob, which the browser keeps on disk), so it works
//               on plain http:// from a LAN address too. Slower than OPFS.
//   memory    - pieces in this worker's memory, at most MEMORY_LIMIT bytes in all; nothing
//               survives a reload.
// (Every browser with OPFS has synchronous access handles in dedicated workers, so there is
// no separate tier for OPFS's asynchronous writable streams.)
//
// What is kept per content `name` (its id): the data; its manifest (the encoded bytes, given
// to `open`, or to `remember` for a file shared from the user's disk, which keeps no data);
// and which pieces are stored (a bit per piece, most significant first), set only once the
// piece's bytes are written. `list` returns all of it so the page can resume.
//
// Requests: {seq, op: 'init', prefer} -> {tier, hashing, skipped: [reason]}
//           {seq, op: 'open', name, size, pieceSize, manifest}
//           {seq, op: 'remember', name, manifest}            (a shared file's manifest only)
//           {seq, op: 'write', name, offset, piece, data, sha256?} -> stored?
//           {seq, op: 'read', name, offset, len} -> ArrayBuffer
//           {seq, op: 'check', name, offset, len, sha256} -> whether the stored bytes match
//           {seq, op: 'close', name} -> Blob of the whole file (the download is complete)
//           {seq, op: 'file', name} -> Blob of a complete file kept from before
//           {seq, op: 'remove', name}
//           {seq, op: 'list'} -> [{name, kind: 'download' | 'shared', manifest, have}]
//           {seq, op: 'estimate'} -> {quota, usage} | null
// Replies:  {seq, ok: true, data?, buffer?} | {seq, ok: false, error}
// A write with `sha256` (32 bytes) hashes `data` first and writes it only if it matches: its
// reply's `data` says whether it did. (The browser's SHA-256 is many times faster than one
// compiled to WebAssembly, and here it does not hold up the page.) A stored write's reply
// hands its `data` buffer back (`buffer`, transferred) for the page to fill again:
// allocating and faulting in fresh memory for every piece cost more than copying it.
//
// Requests are handled one at a time, in order, so a read never overtakes the write before
// it. In OPFS, writes that continue one another (pieces arrive in runs) are gathered and
// written together, up to GATHER bytes or once IDLE_MS pass without the next one: each write
// costs a system call (and in an incognito context, where the file lives in the browser
// process's memory, a round trip to that process), so 4 MiB at a time took about half the
// CPU of 256 KiB at a time (measured in incognito). Their replies wait for the write; any
// other request writes what is gathered first.
const GATHER = 4 * 1024 * 1024;
const IDLE_MS = 20;
/** Most bytes the memory tier holds (downloads reserve their whole size when opened); `init`
 *  may lower it (`memoryLimit`, for tests). */
let MEMORY_LIMIT = 512 * 1024 * 1024;
/** How long `open` keeps trying when another context (the page before a reload, whose
 *  worker is still shutting down) holds the file's access handle. */
const OPEN_RETRIES = 20;
const OPEN_RETRY_MS = 100;
const DB_NAME = 'swarm';

const hashing = !!(self.crypto && self.crypto.subtle);
let backend = null;

function equal(a, b) {
  const [x, y] = [new Uint8Array(a), new Uint8Array(b)];
  return x.length === y.length && x.every((byte, i) => byte === y[i]);
}

async function matches(bytes, sha256) {
  return equal(await crypto.subtle.digest('SHA-256', bytes), sha256);
}

function pieceCount(size, pieceSize) {
  return pieceSize > 0 ? Math.ceil(size / pieceSize) : 0;
}

function setBit(bits, i) {
  bits[i >> 3] |= 0x80 >> (i & 7);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- OPFS ----

async function opfs() {
  if (!self.navigator || !navigator.storage || !navigator.storage.getDirectory) {
    throw new Error('OPFS: navigator.storage is not available (an insecure context?)');
  }
  if (!self.FileSystemFileHandle || !FileSystemFileHandle.prototype.createSyncAccessHandle) {
    throw new Error('OPFS: no synchronous access handles in this browser');
  }
  const root = await navigator.storage.getDirectory();
  const dir = await root.getDirectoryHandle('swarm', { create: true });
  /** Open files: name -> {access, haveAccess, have: Uint8Array}. */
  const open = new Map();
  /** Gathered writes: {name, offset, length, parts: [Uint8Array], pieces, seqs}, or null. */
  let gathered = null;
  let idle = null;
  /** Where gathered pieces are put together (allocated once). */
  let gatherBuffer = null;

  async function syncHandle(name) {
    const file = await dir.getFileHandle(name, { create: true });
    for (let attempt = 0; ; attempt++) {
      try {
        return await file.createSyncAccessHandle();
      } catch (err) {
        // Held by another context for a moment (a reload); anything else is final.
        if (err.name !== 'NoModificationAllowedError' || attempt >= OPEN_RETRIES) throw err;
        await sleep(OPEN_RETRY_MS);
      }
    }
  }

  function writeAll(access, bytes, offset) {
    let written = 0;
    while (written < bytes.length) {
      written += access.write(bytes.subarray(written), { at: offset + written });
    }
  }

  async function readFile(name) {
    try {
      return await (await dir.getFileHandle(name)).getFile();
    } catch (err) {
      if (err.name === 'NotFoundError') return null;
      throw err;
    }
  }

  async function writeSmallFile(name, bytes) {
    const access = await syncHandle(name);
    try {
      access.truncate(0);
      writeAll(access, new Uint8Array(bytes), 0);
      access.flush();
    } finally {
      access.close();
    }
  }

  /** Writes what is gathered, marks its pieces stored, and replies to each of its writes. */
  function flush() {
    clearTimeout(idle);
    idle = null;
    if (!gathered) return;
    const { name, offset, length, parts, pieces, seqs } = gathered;
    gathered = null;
    try {
      const file = open.get(name);
      if (!file) throw new Error(`${name} is not open`);
      let bytes = parts[0];
      if (parts.length > 1) {
        // Several parts are together at most GATHER bytes (see `write`).
        gatherBuffer ||= new Uint8Array(GATHER);
        bytes = gatherBuffer.subarray(0, length);
        let at = 0;
        for (const part of parts) {
          bytes.set(part, at);
          at += part.length;
        }
      }
      writeAll(file.access, bytes, offset);
      // The bits only after the data: a bit set always means the bytes are there.
      for (const piece of pieces) setBit(file.have, piece);
      writeAll(file.haveAccess, file.have, 0);
      seqs.forEach((seq, i) => {
        const buffer = parts[i].buffer;
        self.postMessage({ seq, ok: true, data: true, buffer }, [buffer]);
      });
    } catch (err) {
      for (const seq of seqs) self.postMessage({ seq, ok: false, error: `${err.name}: ${err.message}` });
    }
  }

  return {
    tier: 'opfs',
    beforeOther: flush,
    async open(name, size, pieceSize, manifest) {
      if (open.has(name)) return;
      if (manifest) await writeSmallFile(`${name}.manifest`, manifest);
      // Kept as a download from now on (a shared file copied into storage), not as shared.
      await dir.removeEntry(`${name}.shared`).catch(() => {});
      const access = await syncHandle(name);
      if (access.getSize() !== size) access.truncate(size);
      const haveAccess = await syncHandle(`${name}.have`);
      const have = new Uint8Array(Math.ceil(pieceCount(size, pieceSize) / 8));
      if (haveAccess.getSize() === have.length) haveAccess.read(have, { at: 0 });
      else haveAccess.truncate(have.length);
      open.set(name, { access, haveAccess, have });
    },
    async remember(name, manifest) {
      await writeSmallFile(`${name}.shared`, manifest);
    },
    /** Gathers a write; its reply is sent by `flush`. */
    write(seq, name, offset, piece, bytes) {
      if (!open.has(name)) throw new Error(`${name} is not open`);
      const continues = gathered && gathered.name === name && gathered.offset + gathered.length === offset;
      if (gathered && (!continues || gathered.length + bytes.length > GATHER)) flush();
      if (!gathered) gathered = { name, offset, length: 0, parts: [], pieces: [], seqs: [] };
      gathered.parts.push(bytes);
      gathered.pieces.push(piece);
      gathered.length += bytes.length;
      gathered.seqs.push(seq);
      clearTimeout(idle);
      idle = setTimeout(() => { queue = queue.then(flush); }, IDLE_MS);
      return null;
    },
    async read(name, offset, len) {
      const file = open.get(name);
      if (file) {
        const bytes = new Uint8Array(len);
        const read = file.access.read(bytes, { at: offset });
        if (read !== len) throw new Error(`short read: ${read} of ${len} bytes`);
        return bytes.buffer;
      }
      // Closed (complete), or kept from before: read the file itself.
      const data = await (await this.file(name)).slice(offset, offset + len).arrayBuffer();
      if (data.byteLength !== len) throw new Error(`short read of ${name}`);
      return data;
    },
    async close(name) {
      const file = open.get(name);
      if (file) {
        file.access.flush();
        file.access.close();
        file.haveAccess.flush();
        file.haveAccess.close();
        open.delete(name);
      }
      return this.file(name);
    },
    async file(name) {
      const file = await readFile(name);
      if (!file) throw new Error(`${name} is not stored`);
      return file;
    },
    async remove(name) {
      const file = open.get(name);
      if (file) {
        file.access.close();
        file.haveAccess.close();
        open.delete(name);
      }
      // The data first: if another tab of this site holds it open (it is downloading it
      // too), nothing of it is removed, so that tab keeps its manifest and pieces.
      try {
        await dir.removeEntry(name);
      } catch (err) {
        if (err.name !== 'NotFoundError') throw err;
      }
      for (const entry of [`${name}.have`, `${name}.manifest`, `${name}.shared`]) {
        await dir.removeEntry(entry).catch(() => {});
      }
    },
    async list() {
      const entries = [];
      const names = [];
      for await (const [entry] of dir.entries()) names.push(entry);
      const described = new Set(names.filter((n) => n.endsWith('.manifest')).map((n) => n.split('.')[0]));
      for (const entry of names) {
        const [name, kind] = entry.split('.');
        // Data without a manifest (left by an older version of this worker) cannot be resumed.
        if (!described.has(name) && (kind === undefined || kind === 'have') && !open.has(name)) {
          await dir.removeEntry(entry).catch(() => {});
          continue;
        }
        if (kind !== 'manifest' && kind !== 'shared') continue;
        const manifest = await (await readFile(entry)).arrayBuffer();
        if (kind === 'shared') {
          entries.push({ name, kind: 'shared', manifest, have: null });
          continue;
        }
        const data = await readFile(name);
        const have = await readFile(`${name}.have`);
        entries.push({
          name,
          kind: 'download',
          manifest,
          size: data ? data.size : 0,
          have: have ? new Uint8Array(await have.arrayBuffer()) : null,
        });
      }
      return entries;
    },
    estimate: estimateStorage,
  };
}

async function estimateStorage() {
  if (!self.navigator || !navigator.storage || !navigator.storage.estimate) return null;
  const { quota, usage } = await navigator.storage.estimate();
  return { quota, usage };
}

// ---- IndexedDB ----

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function indexeddb() {
  if (!self.indexedDB) throw new Error('IndexedDB is not available');
  const open = indexedDB.open(DB_NAME, 1);
  open.onupgradeneeded = () => {
    const db = open.result;
    db.createObjectStore('meta');
    db.createObjectStore('pieces');
  };
  const db = await request(open);
  /** name -> {size, pieceSize}, of what `open` saw. */
  const sizes = new Map();
  const store = (name, mode) => db.transaction(name, mode).objectStore(name);
  const pieceRange = (name) => IDBKeyRange.bound([name, 0], [name, Infinity]);

  async function meta(name) {
    if (!sizes.has(name)) {
      const record = await request(store('meta', 'readonly').get(name));
      if (!record || record.kind !== 'download') throw new Error(`${name} is not stored`);
      sizes.set(name, { size: record.size, pieceSize: record.pieceSize });
    }
    return sizes.get(name);
  }

  async function whole(name) {
    const { size, pieceSize } = await meta(name);
    const pieces = await request(store('pieces', 'readonly').getAll(pieceRange(name)));
    if (pieces.length !== pieceCount(size, pieceSize)) {
      throw new Error(`${name} is incomplete: ${pieces.length} of ${pieceCount(size, pieceSize)} pieces`);
    }
    return new Blob(pieces);
  }

  return {
    tier: 'indexeddb',
    async open(name, size, pieceSize, manifest) {
      sizes.set(name, { size, pieceSize });
      const existing = await request(store('meta', 'readonly').get(name));
      if (existing && existing.kind === 'download' && existing.size === size) return;
      await request(store('meta', 'readwrite').put({ kind: 'download', size, pieceSize, manifest }, name));
    },
    async remember(name, manifest) {
      const existing = await request(store('meta', 'readonly').get(name));
      if (existing && existing.kind === 'download') return;
      await request(store('meta', 'readwrite').put({ kind: 'shared', manifest }, name));
    },
    async write(seq, name, offset, piece, bytes) {
      await meta(name);
      // A Blob is kept on disk by the browser and copies the bytes, so the buffer goes back.
      await request(store('pieces', 'readwrite').put(new Blob([bytes]), [name, piece]));
      return { data: true, buffer: bytes.buffer, transfer: [bytes.buffer] };
    },
    async read(name, offset, len) {
      const { pieceSize } = await meta(name);
      const out = new Uint8Array(len);
      let at = 0;
      while (at < len) {
        const piece = Math.floor((offset + at) / pieceSize);
        // A transaction of its own each time: one ends once its requests are done.
        const blob = await request(store('pieces', 'readonly').get([name, piece]));
        if (!blob) throw new Error(`piece ${piece} of ${name} is not stored`);
        const start = offset + at - piece * pieceSize;
        const take = Math.min(len - at, blob.size - start);
        if (take <= 0) throw new Error(`short read of ${name}`);
        out.set(new Uint8Array(await blob.slice(start, start + take).arrayBuffer()), at);
        at += take;
      }
      return out.buffer;
    },
    close: whole,
    file: whole,
    async remove(name) {
      sizes.delete(name);
      await request(store('pieces', 'readwrite').delete(pieceRange(name)));
      await request(store('meta', 'readwrite').delete(name));
    },
    async list() {
      const names = await request(store('meta', 'readonly').getAllKeys());
      const entries = [];
      for (const name of names) {
        const record = await request(store('meta', 'readonly').get(name));
        if (!record || !record.manifest) continue;
        if (record.kind !== 'download') {
          entries.push({ name, kind: 'shared', manifest: record.manifest, have: null });
          continue;
        }
        const keys = await request(store('pieces', 'readonly').getAllKeys(pieceRange(name)));
        const count = pieceCount(record.size, record.pieceSize);
        const have = new Uint8Array(Math.ceil(count / 8));
        for (const [, piece] of keys) if (piece < count) setBit(have, piece);
        entries.push({ name, kind: 'download', manifest: record.manifest, size: record.size, have });
      }
      return entries;
    },
    estimate: estimateStorage,
  };
}

// ---- memory ----

function memory() {
  /** name -> {size, pieceSize, pieces: Map<piece, Uint8Array>, blob} */
  const files = new Map();
  let reserved = 0;
  const get = (name) => {
    const file = files.get(name);
    if (!file) throw new Error(`${name} is not stored`);
    return file;
  };
  return {
    tier: 'memory',
    async open(name, size, pieceSize) {
      if (files.has(name)) return;
      if (reserved + size > MEMORY_LIMIT) {
        throw new Error(`QuotaExceededError: ${size} bytes do not fit in the ${MEMORY_LIMIT} bytes kept in memory`);
      }
      reserved += size;
      files.set(name, { size, pieceSize, pieces: new Map(), blob: null });
    },
    async remember() {},
    async write(seq, name, offset, piece, bytes) {
      get(name).pieces.set(piece, bytes);
      return { data: true };
    },
    async read(name, offset, len) {
      const file = get(name);
      if (file.blob) return file.blob.slice(offset, offset + len).arrayBuffer();
      const out = new Uint8Array(len);
      let at = 0;
      while (at < len) {
        const piece = Math.floor((offset + at) / file.pieceSize);
        const bytes = file.pieces.get(piece);
        if (!bytes) throw new Error(`piece ${piece} of ${name} is not stored`);
        const start = offset + at - piece * file.pieceSize;
        const part = bytes.subarray(start, start + (len - at));
        if (part.length === 0) throw new Error(`short read of ${name}`);
        out.set(part, at);
        at += part.length;
      }
      return out.buffer;
    },
    async close(name) {
      const file = get(name);
      if (!file.blob) {
        const count = pieceCount(file.size, file.pieceSize);
        const parts = [];
        for (let i = 0; i < count; i++) {
          const bytes = file.pieces.get(i);
          if (!bytes) throw new Error(`piece ${i} of ${name} is not stored`);
          parts.push(bytes);
        }
        file.blob = new Blob(parts);
        file.pieces.clear();
      }
      return file.blob;
    },
    async file(name) {
      return this.close(name);
    },
    async remove(name) {
      const file = files.get(name);
      if (file) reserved -= file.size;
      files.delete(name);
    },
    async list() {
      return [];
    },
    async estimate() {
      return { quota: MEMORY_LIMIT, usage: reserved };
    },
  };
}

const TIERS = { opfs, indexeddb, memory };
const ORDER = ['opfs', 'indexeddb', 'memory'];

/** The first tier, from `prefer` down, that works; why the better ones did not. */
async function choose(prefer) {
  const skipped = [];
  for (const tier of ORDER.slice(Math.max(0, ORDER.indexOf(prefer)))) {
    try {
      return { backend: await TIERS[tier](), skipped };
    } catch (err) {
      skipped.push(`${tier}: ${err.message || err}`);
    }
  }
  throw new Error(`no storage works here (${skipped.join('; ')})`);
}

/** Handles one request; resolves to its reply, or to `null` when `flush` replies later. */
async function handle(request) {
  const { op, seq, name } = request;
  if (op === 'init') {
    if (request.memoryLimit >= 0) MEMORY_LIMIT = request.memoryLimit;
    const chosen = await choose(request.prefer);
    backend = chosen.backend;
    return { data: { tier: backend.tier, hashing, skipped: chosen.skipped } };
  }
  if (!backend) throw new Error('storage is not initialised');
  if (op !== 'write' && backend.beforeOther) backend.beforeOther();
  switch (op) {
    case 'open':
      await backend.open(name, request.size, request.pieceSize, request.manifest);
      return {};
    case 'remember':
      await backend.remember(name, request.manifest);
      return {};
    case 'write': {
      const bytes = new Uint8Array(request.data);
      if (request.sha256 && !(await matches(bytes, request.sha256))) {
        if (backend.beforeOther) backend.beforeOther();
        return { data: false };
      }
      return backend.write(seq, name, request.offset, request.piece, bytes);
    }
    case 'read': {
      const data = await backend.read(name, request.offset, request.len);
      return { data, transfer: [data] };
    }
    case 'check': {
      const data = await backend.read(name, request.offset, request.len);
      return { data: await matches(new Uint8Array(data), request.sha256) };
    }
    case 'close':
      return { data: await backend.close(name) };
    case 'file':
      return { data: await backend.file(name) };
    case 'remove':
      await backend.remove(name);
      return {};
    case 'list':
      return { data: await backend.list() };
    case 'estimate':
      return { data: await backend.estimate() };
    default:
      throw new Error(`unknown storage operation ${op}`);
  }
}

let queue = Promise.resolve();
self.onmessage = (event) => {
  const request = event.data;
  queue = queue.then(async () => {
    try {
      const reply = await handle(request);
      if (reply) {
        const message = { seq: request.seq, ok: true, data: reply.data };
        if (reply.buffer) message.buffer = reply.buffer;
        self.postMessage(message, reply.transfer || []);
      }
    } catch (err) {
      self.postMessage({ seq: request.seq, ok: false, error: `${err.name}: ${err.message}` });
    }
  });
};
