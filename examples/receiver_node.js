#!/usr/bin/env node
// A webhook receiver in Node.js (no dependencies) that verifies hookrelay's signatures.
//
//   node examples/receiver_node.js [PORT] [SECRET]      (or PORT / WEBHOOK_SECRET in the environment)
//
// X-Webhook-Signature is `sha256=<hex HMAC-SHA256(secret, raw body)>`. During a key rotation it
// carries several signatures separated by commas: accept the request when any one matches.
//
// Compare with crypto.timingSafeEqual, never with `===`: `===` stops at the first differing
// character, so the time it takes tells an attacker how much of a forged signature is right.
// timingSafeEqual throws on buffers of different lengths, so check the length first (the length
// of a sha256= signature is public anyway).
//
// Replays: the signature covers only the body, so a captured request can be resent with any
// headers. What the body says is signed: its `id` and `created_at`. This receiver refuses (401)
// an X-Timestamp more than 5 minutes from now (stops careless replays; the header is not
// signed), a created_at older than MAX_AGE_SECONDS (default one day), and dedupes on the body's
// `id` (never on the X-Event-ID header alone) for at least as long, so every capture young enough
// to pass the age check is caught as a duplicate.
//
// Delivery is at-least-once: a duplicate is acknowledged (200) but not processed again. The ids
// are kept in memory here; keep them with the effects of processing (a unique key in your DB).
// GET /stats answers {"accepted", "duplicates", "rejected"}; each decision is logged on stdout.
'use strict';

const crypto = require('node:crypto');
const http = require('node:http');

const port = Number(process.argv[2] || process.env.PORT || 9000);
const secret = process.argv[3] || process.env.WEBHOOK_SECRET;
const host = process.env.HOST || '127.0.0.1';
const maxAge = Number(process.env.MAX_AGE_SECONDS || 86400);
const clockSkew = 300; // seconds X-Timestamp and created_at may be off from this machine's clock
if (!secret) {
  console.error('usage: node receiver_node.js PORT SECRET (or set WEBHOOK_SECRET)');
  process.exit(2);
}

function sign(body) {
  return 'sha256=' + crypto.createHmac('sha256', secret).update(body).digest('hex');
}

function verifySignature(body, header) {
  const expected = Buffer.from(sign(body), 'utf8');
  let ok = false;
  for (const candidate of String(header || '').split(/[,\s]+/)) {
    if (!candidate) continue;
    const given = Buffer.from(candidate, 'utf8');
    // Equal length first: timingSafeEqual throws otherwise. No early return: check every candidate.
    if (given.length === expected.length && crypto.timingSafeEqual(given, expected)) ok = true;
  }
  return ok;
}

const seen = new Map(); // event id (from the signed body) -> created_at in UNIX seconds
const stats = { accepted: 0, duplicates: 0, rejected: 0 };

function reply(res, status, obj) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(obj));
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') return reply(res, 200, stats);
  if (req.method !== 'POST') return reply(res, 405, { error: 'method not allowed' });
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks); // the raw bytes: exactly what was signed
    const headerId = req.headers['x-event-id'] || '-';
    const reject = (id, why, status = 401) => {
      stats.rejected += 1;
      console.log(`rejected ${id}: ${why}`);
      return reply(res, status, { error: why });
    };
    if (!verifySignature(body, req.headers['x-webhook-signature'])) return reject(headerId, 'bad signature');
    const now = Date.now() / 1000;
    const stamp = String(req.headers['x-timestamp'] || '');
    if (!/^[0-9]{1,12}$/.test(stamp) || Math.abs(Number(stamp) - now) > clockSkew) {
      return reject(headerId, 'stale or missing X-Timestamp');
    }
    let event;
    try {
      event = JSON.parse(body.toString('utf8'));
    } catch (e) {
      return reject(headerId, 'not a hookrelay envelope', 400);
    }
    const eventId = event && typeof event.id === 'string' ? event.id : null; // signed, unlike X-Event-ID
    if (!eventId) return reject(headerId, 'not a hookrelay envelope', 400);
    const created = Date.parse(event.created_at) / 1000;
    if (!Number.isFinite(created) || created < now - maxAge || created > now + clockSkew) {
      return reject(eventId, 'stale created_at (older than MAX_AGE_SECONDS)');
    }
    for (const [id, at] of seen) if (at < now - maxAge) seen.delete(id); // too old to pass again
    if (seen.has(eventId)) {
      stats.duplicates += 1;
      console.log(`duplicate ${eventId}: already processed, acknowledging again`);
      return reply(res, 200, { status: 'duplicate' });
    }
    seen.set(eventId, created);
    stats.accepted += 1;
    console.log(`accepted ${eventId} ${event.event_type}`);
    return reply(res, 200, { status: 'ok' });
  });
});

server.listen(port, host, () => console.log(`listening on http://${host}:${port}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
