// A stand-in for RangerPlex's Express API: its sync routes take a whole chat or the settings and
// overwrite what is stored (INSERT OR REPLACE), answer 500 on errors and know nothing of
// rangersync's protocol. Two additions: the Idempotency-Key middleware below (what exactly-once
// asks of a route whose calls the worker may replay), and `GET /api/debug/applied`, the log of
// every write applied, which the example's end-to-end test reads.
//
// Storage is a JSON file written synchronously after each change (RangerPlex uses better-sqlite3;
// a native module would need a compiler and a download of Node's headers to install).
//
//   PORT=3000 ALLOW_ORIGIN=http://localhost:5173 API_DB=api-data.json node api/server.js
import cors from 'cors';
import express from 'express';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';

const port = Number(process.env.PORT ?? 3000);
const allowOrigin = process.env.ALLOW_ORIGIN ?? 'http://localhost:5173';
const file = process.env.API_DB ?? 'api-data.json';

const db = existsSync(file)
  ? JSON.parse(readFileSync(file, 'utf8'))
  : { chats: {}, settings: {}, idempotency: {}, applied: [] };

function save() {
  writeFileSync(`${file}.tmp`, JSON.stringify(db));
  renameSync(`${file}.tmp`, file);
}

// Exactly-once for replayed calls: a route stores its answer under the call's Idempotency-Key
// in the same save as its write (`commit`); a repeat of the key gets that answer again and
// changes nothing.
function idempotency(req, res, next) {
  const key = req.get('Idempotency-Key');
  const done = key && db.idempotency[key];
  if (done) return res.status(done.status).json(done.body);
  next();
}

function commit(req, res, body) {
  const key = req.get('Idempotency-Key');
  if (key) db.idempotency[key] = { status: 200, body };
  save();
  res.json(body);
}

const app = express();
app.use(cors({ origin: allowOrigin, allowedHeaders: ['Content-Type', 'Authorization', 'Idempotency-Key'] }));
app.use(express.json({ limit: '1mb' }));

app.post('/api/sync/chat', idempotency, (req, res) => {
  const chat = req.body;
  if (typeof chat?.id !== 'string' || !Array.isArray(chat.messages)) {
    return res.status(400).json({ error: 'a chat is { id: string, messages: [] }' });
  }
  db.chats[chat.id] = chat; // INSERT OR REPLACE
  db.applied.push({ route: 'chat', id: chat.id, messages: chat.messages.length, key: req.get('Idempotency-Key') ?? null, at: Date.now() });
  commit(req, res, { success: true });
});

app.post('/api/sync/settings', idempotency, (req, res) => {
  if (typeof req.body !== 'object' || req.body === null) {
    return res.status(400).json({ error: 'settings are an object' });
  }
  db.settings = req.body;
  db.applied.push({ route: 'settings', key: req.get('Idempotency-Key') ?? null, at: Date.now() });
  commit(req, res, { success: true });
});

app.get('/api/chats', (_req, res) => res.json(Object.values(db.chats)));
app.get('/api/debug/applied', (_req, res) => res.json(db.applied));

app.use((err, _req, res, _next) => {
  res.status(500).json({ error: String(err?.message ?? err) });
});

app.listen(port, '127.0.0.1', () => {
  console.log(`API on http://127.0.0.1:${port}, allowing ${allowOrigin}`);
});
