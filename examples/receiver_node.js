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
// Delivery is at-least-once: dedupe on X-Event-ID (kept in memory here; use your database).
// GET /stats answers {"accepted", "duplicates", "rejected"}; each decision is logged on stdout.
'use strict';

const crypto = require('node:crypto');
const http = require('node:http');

const port = Number(process.argv[2] || process.env.PORT || 9000);
const secret = process.argv[3] || process.env.WEBHOOK_SECRET;
const host = process.env.HOST || '127.0.0.1';
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

const seen = new Set();
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
    const eventId = req.headers['x-event-id'] || '-';
    if (!verifySignature(body, req.headers['x-webhook-signature'])) {
      stats.rejected += 1;
      console.log(`rejected ${eventId}: bad signature`);
      return reply(res, 401, { error: 'invalid signature' });
    }
    if (seen.has(eventId)) {
      stats.duplicates += 1;
      console.log(`duplicate ${eventId}: already processed, acknowledging again`);
      return reply(res, 200, { status: 'duplicate' });
    }
    seen.add(eventId);
    stats.accepted += 1;
    let eventType = '?';
    try {
      eventType = JSON.parse(body.toString('utf8')).event_type;
    } catch (e) {
      // signed but not JSON: still acknowledged; hookrelay always sends JSON
    }
    console.log(`accepted ${eventId} ${eventType}`);
    return reply(res, 200, { status: 'ok' });
  });
});

server.listen(port, host, () => console.log(`listening on http://${host}:${port}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
