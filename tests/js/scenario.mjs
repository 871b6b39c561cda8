// End-to-end scenario: the stock itty-sockets client (npm `itty-sockets`) against a running relay.
//
//   node tests/js/scenario.mjs ws://127.0.0.1:8787 [channel-prefix]
//
// The relay must have the reserved namespace `secure` with join_key "jk" and send_key "sk".
// Exit 0 with one JSON summary line on stdout when every check passes; exit 1 with the failed
// check (and the frames the clients saw) on stderr otherwise. The whole run is bounded by a hard
// timeout.

import assert from 'node:assert/strict'
import { connect } from 'itty-sockets'
import WebSocket from 'ws'

const OVERALL_TIMEOUT_MS = 15_000
const STEP_TIMEOUT_MS = 4_000
const QUIET_MS = 150

const [base, prefix = `itty-${process.pid}`] = process.argv.slice(2)
if (!base || !/^wss?:\/\//.test(base)) {
  process.stderr.write('usage: node scenario.mjs ws://HOST:PORT [channel-prefix]\n')
  process.exit(2)
}
const httpBase = base.replace(/^ws/, 'http')

// ---------------------------------------------------------------------------------------------
// The client uses the global WebSocket. `ws` stands in for the browser's, with the two browser
// behaviours the client relies on: send() converts a non-binary argument to a string (so
// `.send()` with no argument sends the text "undefined", where bare `ws` would send an empty
// binary frame), and a failed handshake dispatches an error event that is harmless when nobody
// listens (bare `ws` throws an unhandled 'error'). Handshake errors are recorded per URL.

const socketErrors = []
// The extensions each socket negotiated (`ws` offers permessage-deflate, as browsers do); with
// EXPECT_EXTENSION set, every socket must have negotiated that one.
const negotiated = []
const expectedExtension = process.env.EXPECT_EXTENSION ?? ''

class BrowserLikeWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols)
    this.on('error', (err) => socketErrors.push({ url: String(url), message: String(err?.message ?? err) }))
    this.on('open', () => negotiated.push(this.extensions))
  }

  send(data) {
    const binary = data instanceof ArrayBuffer || ArrayBuffer.isView(data) || data instanceof Blob
    return super.send(binary ? data : String(data))
  }
}

globalThis.WebSocket = BrowserLikeWebSocket

// ---------------------------------------------------------------------------------------------
// Failure reporting.

let step = 'start'
let checks = 0
const steps = []
const clients = []

function dumpFrames() {
  return clients
    .map((c) => `  ${c.name} (uid ${c.uid ?? '?'}, opened=${c.opened}, closed=${c.closed}):\n` +
      c.frames.map((f) => `    ${JSON.stringify(f)}`).join('\n'))
    .join('\n')
}

function fail(message) {
  process.stderr.write(`FAIL [step: ${step}] ${message}\n`)
  if (socketErrors.length) process.stderr.write(`socket errors: ${JSON.stringify(socketErrors)}\n`)
  process.stderr.write(`events seen by each client (in order):\n${dumpFrames()}\n`)
  process.exit(1)
}

const hardTimeout = setTimeout(() => fail(`overall timeout of ${OVERALL_TIMEOUT_MS} ms exceeded`), OVERALL_TIMEOUT_MS)
process.on('uncaughtException', (err) => fail(`uncaught exception: ${err?.stack ?? err}`))
process.on('unhandledRejection', (err) => fail(`unhandled rejection: ${err?.stack ?? err}`))

function check(condition, message) {
  checks++
  if (!condition) fail(message)
}

function checkEqual(actual, expected, message) {
  checks++
  try {
    assert.deepStrictEqual(actual, expected)
  } catch {
    fail(`${message}\n  expected: ${JSON.stringify(expected)}\n  actual:   ${JSON.stringify(actual)}`)
  }
}

function begin(name) {
  step = name
  steps.push(name)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function waitFor(predicate, label, ms = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + ms
  for (;;) {
    const value = predicate()
    if (value) return value
    if (Date.now() > deadline) fail(`timed out after ${ms} ms waiting for: ${label}`)
    await sleep(5)
  }
}

// ---------------------------------------------------------------------------------------------
// A client: one itty-sockets connection plus everything its listeners saw.
//   frames: every event, once per frame, in arrival order (a catch-all filter listener)
//   seen:   per listener name (typed listeners), so routing can be checked

const LISTENED = ['join', 'leave', 'error', 'chat', 'dm', 'news', 'sync', 'message']

function client(name, channel, options) {
  const c = {
    name, channel, options,
    url: `${base}/c/${channel}`,
    frames: [],
    seen: Object.fromEntries(LISTENED.map((k) => [k, []])),
    opened: false, closed: false, openedBeforeClose: false, uid: undefined,
  }
  c.sock = connect(c.url, options)
  c.sock.on(() => true, (event) => c.frames.push(event))
  for (const kind of LISTENED) c.sock.on(kind, (event) => c.seen[kind].push(event))
  c.sock.on('open', () => { c.opened = true })
  c.sock.on('close', () => { c.closed = true })
  clients.push(c)
  return c
}

const selfJoin = (c) => c.seen.join.find((e) => e.self === true)

async function joined(c) {
  const ev = await waitFor(() => selfJoin(c), `${c.name}'s self-join`)
  c.uid = ev.uid
  check(c.frames[0] === ev, `${c.name}: the self-join must be the first frame on the connection`)
  check(typeof ev.uid === 'string' && /^[A-Za-z0-9]{6}$/.test(ev.uid), `${c.name}: self-join uid must be 6 alphanumerics, got ${JSON.stringify(ev.uid)}`)
  check(typeof ev.date === 'number', `${c.name}: self-join date must be a number`)
  check(typeof ev.total === 'number', `${c.name}: self-join total must be a number`)
  if (c.options.alias) checkEqual(ev.alias, c.options.alias, `${c.name}: self-join alias`)
  else check(!('alias' in ev), `${c.name}: self-join must have no alias key when none was set`)
  return ev
}

const eventFrom = (c, kind, pred = () => true) => c.seen[kind].find(pred)

function checkRelayed(ev, sender, payload, label) {
  checkEqual(ev.message, payload, `${label}: 'message' must be the sender's value unchanged`)
  if (sender) {
    checkEqual(ev.uid, sender.uid, `${label}: envelope uid must be the sender's`)
    if (sender.options.alias) checkEqual(ev.alias, sender.options.alias, `${label}: envelope alias`)
    else check(!('alias' in ev), `${label}: no alias key when the sender set none`)
  } else {
    check(!('uid' in ev) && !('alias' in ev), `${label}: an HTTP-pushed message has no uid or alias`)
  }
  check(typeof ev.date === 'number' && Math.abs(ev.date - Date.now()) < 60_000, `${label}: date must be a number near now, got ${JSON.stringify(ev.date)}`)
  if (payload && typeof payload === 'object' && !Array.isArray(payload)) {
    for (const [k, v] of Object.entries(payload)) {
      if (!['uid', 'alias', 'date', 'message'].includes(k)) checkEqual(ev[k], v, `${label}: payload field ${k} spread into the event`)
    }
  }
}

function closeAll(...cs) {
  for (const c of cs) if (c.opened && !c.closed) c.sock.close()
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const room = `${prefix}-room`
  const url = `${base}/c/${room}`

  // ---- joins ---------------------------------------------------------------------------------
  begin('self-join')
  const a = client('A', room, { alias: 'alice', announce: true, echo: true, list: true })
  const aJoin = await joined(a)
  checkEqual(aJoin.total, 1, 'A: total in the first self-join')
  checkEqual(aJoin.users, [{ uid: a.uid, alias: 'alice', self: true }], 'A: users list of the first joiner')
  check(a.seen.message.length === 0, "A: a self-join must not reach 'message' listeners")

  begin('join-announced')
  const b = client('B', room, { alias: 'bob', announce: true, echo: false, list: true })
  const bJoin = await joined(b)
  checkEqual(bJoin.total, 2, 'B: total in self-join')
  checkEqual(bJoin.users, [{ uid: a.uid, alias: 'alice' }, { uid: b.uid, alias: 'bob', self: true }], 'B: users list')
  const aSeesB = await waitFor(() => eventFrom(a, 'join', (e) => e.uid === b.uid), "A: B's join")
  checkEqual(aSeesB.alias, 'bob', "A: alias in B's join")
  checkEqual(aSeesB.total, 2, "A: total in B's join")
  check(!('self' in aSeesB) && !('users' in aSeesB), "A: another's join has no self / users")
  check(typeof aSeesB.date === 'number', "A: another's join has a numeric date")

  const c = client('C', room, { announce: true, echo: false, list: true }) // no alias
  const cJoin = await joined(c)
  checkEqual(cJoin.total, 3, 'C: total in self-join')
  checkEqual(cJoin.users, [{ uid: a.uid, alias: 'alice' }, { uid: b.uid, alias: 'bob' }, { uid: c.uid, self: true }], 'C: users list')
  for (const x of [a, b]) {
    const ev = await waitFor(() => eventFrom(x, 'join', (e) => e.uid === c.uid), `${x.name}: C's join`)
    checkEqual(ev.total, 3, `${x.name}: total in C's join`)
    check(!('alias' in ev), `${x.name}: C's join has no alias key (C set none)`)
  }
  check(new Set([a.uid, b.uid, c.uid]).size === 3, 'uids must be unique within the channel')

  // ---- broadcast -----------------------------------------------------------------------------
  begin('broadcast-chat')
  const hello = { type: 'chat', text: 'hello', n: 1, nested: { list: [1, 'two', null] } }
  a.sock.send(hello)
  const got = {}
  for (const x of [a, b, c]) {
    got[x.name] = await waitFor(() => eventFrom(x, 'chat', (e) => e.text === 'hello'), `${x.name}: A's chat`)
    checkRelayed(got[x.name], a, hello, `${x.name} receiving A's chat`)
    checkEqual(got[x.name].type, 'chat', `${x.name}: event type (an envelope type key would override it)`)
    check(eventFrom(x, 'message', (e) => e.text === 'hello'), `${x.name}: 'message' listener must also fire for a relayed message`)
  }
  check(got.A.date === got.B.date && got.B.date === got.C.date, 'one message carries one date for every recipient (echo included)')
  // A state message of a few KB: over the compression thresholds of both ends, when the
  // extension was negotiated (each side then sends it compressed).
  const board = { type: 'chat', text: 'board', rows: Array.from({ length: 60 }, (_, i) => ({ id: `p${i}`, x: i * 1.5, hp: i % 90 })) }
  c.sock.send(board)
  for (const x of [a, b]) {
    const ev = await waitFor(() => eventFrom(x, 'chat', (e) => e.text === 'board'), `${x.name}: C's board`)
    checkRelayed(ev, c, board, `${x.name} receiving C's board`)
  }

  begin('no-echo')
  const fromBob = { type: 'chat', text: 'from bob' }
  b.sock.send(fromBob)
  for (const x of [a, c]) {
    const ev = await waitFor(() => eventFrom(x, 'chat', (e) => e.text === 'from bob'), `${x.name}: B's chat`)
    checkRelayed(ev, b, fromBob, `${x.name} receiving B's chat`)
  }
  // Barrier: A sends after B's message was relayed; B gets A's message, so B's own would be before it.
  a.sock.send({ type: 'sync', step: 'no-echo' })
  await waitFor(() => eventFrom(b, 'sync', (e) => e.step === 'no-echo'), "B: A's sync")
  check(!eventFrom(b, 'chat', (e) => e.text === 'from bob'), 'B (echo off) must not receive its own message')

  begin('non-object-messages')
  const values = ['plain string', 42, 0, [1, 2, 3], true, { no: 'type' }]
  for (const v of values) a.sock.send(v)
  await waitFor(() => eventFrom(b, 'message', (e) => e.no === 'type'), "B: A's non-chat values")
  const bTail = b.seen.message.filter((e) => e.uid === a.uid).slice(-values.length)
  checkEqual(bTail.map((e) => e.message), values, "B: A's values arrive in order as 'message' events")
  for (const ev of bTail) checkRelayed(ev, a, ev.message, `B receiving A's value ${JSON.stringify(ev.message)}`)

  // ---- direct messages -----------------------------------------------------------------------
  begin('direct-message')
  const secret = { type: 'dm', secret: 'for bob only' }
  a.sock.send(secret, b.uid)
  const dm = await waitFor(() => eventFrom(b, 'dm'), "B: A's direct message")
  checkRelayed(dm, a, secret, "B receiving A's direct message")
  a.sock.send({ type: 'sync', step: 'dm' })
  await waitFor(() => eventFrom(c, 'sync', (e) => e.step === 'dm') && eventFrom(a, 'sync', (e) => e.step === 'dm'), 'A and C: the sync after the direct message')
  check(!eventFrom(c, 'dm'), 'C must not receive a direct message addressed to B')
  check(!eventFrom(a, 'dm'), 'a direct message is never echoed to its sender')

  begin('direct-to-unknown-uid')
  const unknown = [a.uid, b.uid, c.uid].includes('Zz9Zz9') ? 'Yy8Yy8' : 'Zz9Zz9'
  a.sock.send({ type: 'dm', secret: 'nobody' }, unknown)
  const unknownErr = await waitFor(() => eventFrom(a, 'error'), 'A: error for an unknown uid')
  check(typeof unknownErr.message === 'string' && unknownErr.message.includes(unknown), `A: the error must contain the uid ${unknown}, got ${JSON.stringify(unknownErr.message)}`)
  checkEqual(unknownErr.message, `User ${unknown} not found.`, 'A: unknown-uid error text')
  check(typeof unknownErr.date === 'number', 'error frame has a numeric date')
  check(!a.seen.message.includes(unknownErr), "an error frame must not reach 'message' listeners")

  begin('invalid-json')
  b.sock.send() // the client sends the text "undefined"
  const badErr = await waitFor(() => eventFrom(b, 'error'), "B: error for a frame that is not JSON")
  checkEqual(badErr.message, 'Invalid JSON message.', 'B: invalid JSON error text')
  const still = { type: 'chat', text: 'still here' }
  b.sock.send(still)
  for (const x of [a, c]) {
    const ev = await waitFor(() => eventFrom(x, 'chat', (e) => e.text === 'still here'), `${x.name}: B's message after its invalid frame`)
    checkRelayed(ev, b, still, `${x.name} receiving B's message after the invalid frame`)
  }
  check(!b.closed, 'B must stay connected after an invalid frame')
  check(a.seen.error.length === 1, "A must get no error for B's invalid frame")
  check(c.seen.error.length === 0, "C must get no error for others' frames")

  // ---- push (send then close) ----------------------------------------------------------------
  begin('push')
  const pushed = { type: 'chat', text: 'pushed by dave' }
  const d = { name: 'D', options: { alias: 'dave', announce: true }, frames: [], opened: false, closed: false }
  clients.push(d)
  d.sock = connect(url, d.options).push(pushed)
  d.sock.on('open', () => { d.opened = true })
  d.sock.on('close', () => { d.closed = true })
  d.sock.on(() => true, (event) => { d.frames.push(event); if (event.self) d.uid = event.uid })
  for (const x of [a, b, c]) {
    const dJoinEv = await waitFor(() => eventFrom(x, 'join', (e) => e.alias === 'dave'), `${x.name}: D's join`)
    await waitFor(() => eventFrom(x, 'leave', (e) => e.uid === dJoinEv.uid), `${x.name}: D's leave after its push`)
    const joinIdx = x.frames.indexOf(dJoinEv)
    const msgIdx = x.frames.findIndex((e) => e.text === 'pushed by dave')
    const leaveIdx = x.frames.findIndex((e) => e.type === 'leave' && e.uid === dJoinEv.uid)
    check(joinIdx >= 0, `${x.name}: D's join must arrive`)
    check(msgIdx >= 0, `${x.name}: the pushed message must be delivered (it was sent before the close)`)
    check(joinIdx < msgIdx && msgIdx < leaveIdx, `${x.name}: order must be join, message, leave; got indexes ${joinIdx}, ${msgIdx}, ${leaveIdx}`)
    const dJoin = x.frames[joinIdx], dMsg = x.frames[msgIdx], dLeave = x.frames[leaveIdx]
    checkEqual(dJoin.total, 4, `${x.name}: total in D's join`)
    checkEqual(dLeave.total, 3, `${x.name}: total in D's leave`)
    checkEqual(dLeave.alias, 'dave', `${x.name}: D's (announced) leave carries D's alias`)
    checkEqual(dMsg.uid, dJoin.uid, `${x.name}: the pushed message carries D's uid`)
    checkEqual(dMsg.alias, 'dave', `${x.name}: the pushed message carries D's alias`)
    checkEqual(dMsg.message, pushed, `${x.name}: the pushed payload`)
  }
  await waitFor(() => d.closed, 'D: close after push')
  check(d.opened, 'D: opened before closing')

  // ---- leave ---------------------------------------------------------------------------------
  begin('leave')
  c.sock.close()
  for (const x of [a, b]) {
    const ev = await waitFor(() => eventFrom(x, 'leave', (e) => e.uid === c.uid), `${x.name}: C's leave`)
    checkEqual(ev.total, 2, `${x.name}: total in C's leave`)
    check(!('alias' in ev), `${x.name}: C's leave has no alias key`)
    check(typeof ev.date === 'number', `${x.name}: leave has a numeric date`)
    check(!x.seen.message.includes(ev), `${x.name}: a leave must not reach 'message' listeners`)
  }
  await waitFor(() => c.closed, 'C: close event')
  closeAll(a, b)
  await waitFor(() => a.closed && b.closed, 'A and B: close events')

  // ---- protected channel ---------------------------------------------------------------------
  begin('protected-channel')
  const sec = `secure:${prefix}-room`
  const p1 = client('P1', sec, { alias: 'p1', announce: true, echo: true, joinKey: 'jk', sendKey: 'sk' })
  await joined(p1)
  const p2 = client('P2', sec, { alias: 'p2', announce: true, joinKey: 'jk' })
  await joined(p2)
  await waitFor(() => eventFrom(p1, 'join', (e) => e.uid === p2.uid), "P1: P2's join")
  const fromP1 = { type: 'chat', text: 'keyed' }
  p1.sock.send(fromP1)
  const p2got = await waitFor(() => eventFrom(p2, 'chat', (e) => e.text === 'keyed'), 'P2: the message of the key holder')
  checkRelayed(p2got, p1, fromP1, 'P2 receiving P1 (with sendKey)')

  p2.sock.send({ type: 'chat', text: 'no send key' })
  const keyErr = await waitFor(() => eventFrom(p2, 'error'), 'P2: error for sending without the sendKey')
  checkEqual(keyErr.message, 'Sending requires a valid sendKey.', 'P2: send-key error text')
  p2.sock.send({ type: 'dm', text: 'no send key either' }, p1.uid)
  await waitFor(() => p2.seen.error.length >= 2, 'P2: error for a direct message without the sendKey')
  checkEqual(p2.seen.error[1].message, 'Sending requires a valid sendKey.', 'P2: send-key error text (direct message)')

  const p3 = client('P3', sec, { alias: 'p3', announce: true, joinKey: 'wrong' })
  const p4 = client('P4', sec, { alias: 'p4', announce: true })
  await waitFor(() => p3.closed && p4.closed, 'P3 (wrong joinKey) and P4 (no joinKey): close')
  for (const x of [p3, p4]) {
    check(!x.opened, `${x.name}: a refused joiner must never open`)
    check(x.frames.length === 0, `${x.name}: a refused joiner receives nothing`)
    const err = socketErrors.find((e) => e.url.startsWith(x.url + '?'))
    check(err && /\b403\b/.test(err.message), `${x.name}: the upgrade must be refused with HTTP 403, got ${JSON.stringify(err?.message)}`)
  }
  p1.sock.send({ type: 'sync', step: 'protected' })
  await waitFor(() => eventFrom(p1, 'sync', (e) => e.step === 'protected') && eventFrom(p2, 'sync', (e) => e.step === 'protected'), 'P1 (echo) and P2: sync')
  check(!eventFrom(p1, 'chat', (e) => e.text === 'no send key'), "P1 must not receive P2's keyless broadcast")
  check(!eventFrom(p1, 'dm'), "P1 must not receive P2's keyless direct message")
  check(p1.seen.join.length === 2 && p2.seen.join.length === 1, 'no join events for refused joiners')
  check(!p2.closed, 'P2 stays connected after the send-key errors')
  closeAll(p1, p2)
  await waitFor(() => p1.closed && p2.closed, 'P1 and P2: close')

  // ---- HTTP push -----------------------------------------------------------------------------
  begin('http-push')
  const news = 'secure:news'
  const n1 = client('N1', news, { joinKey: 'jk' })
  await joined(n1)
  const n2 = client('N2', news, { alias: 'n2', announce: true, joinKey: 'jk' })
  await joined(n2)
  await waitFor(() => eventFrom(n1, 'join', (e) => e.uid === n2.uid), "N1: N2's join")
  const pushUrl = `${httpBase}/push/${news}`
  const body = { type: 'news', n: 1 }
  const res = await fetch(pushUrl, { method: 'POST', headers: { 'x-send-key': 'sk' }, body: JSON.stringify(body) })
  const resText = await res.text()
  checkEqual(res.status, 200, `HTTP push status (body ${resText})`)
  let resJson
  try { resJson = JSON.parse(resText) } catch { fail(`HTTP push response is not JSON: ${resText}`) }
  checkEqual(resJson, { ok: true, recipients: 2 }, 'HTTP push response body')
  for (const x of [n1, n2]) {
    const ev = await waitFor(() => eventFrom(x, 'news', (e) => e.n === 1), `${x.name}: the HTTP-pushed news`)
    checkRelayed(ev, null, body, `${x.name} receiving the HTTP push`)
    checkEqual(ev.type, 'news', `${x.name}: event type of the HTTP push`)
    check(eventFrom(x, 'message', (e) => e.n === 1), `${x.name}: 'message' listener fires for the HTTP push`)
  }

  begin('http-push-refused')
  const wrong = await fetch(pushUrl, { method: 'POST', headers: { 'x-send-key': 'nope' }, body: JSON.stringify({ type: 'news', n: 'wrong key' }) })
  const wrongText = await wrong.text()
  checkEqual(wrong.status, 403, `HTTP push with a wrong key: status (body ${wrongText})`)
  let wrongJson
  try { wrongJson = JSON.parse(wrongText) } catch { fail(`HTTP push 403 body is not JSON: ${wrongText}`) }
  check(wrongJson.ok === false && typeof wrongJson.error === 'string', `HTTP push 403 body must be {"ok":false,"error":...}, got ${wrongText}`)
  const invalid = await fetch(pushUrl, { method: 'POST', headers: { 'x-send-key': 'sk' }, body: 'undefined' })
  const invalidText = await invalid.text()
  checkEqual(invalid.status, 400, `HTTP push of a body that is not JSON: status (body ${invalidText})`)
  let invalidJson
  try { invalidJson = JSON.parse(invalidText) } catch { fail(`HTTP push 400 body is not JSON: ${invalidText}`) }
  checkEqual(invalidJson, { ok: false, error: 'Invalid JSON body.' }, 'HTTP push 400 body')
  const again = await fetch(pushUrl, { method: 'POST', headers: { 'x-send-key': 'sk' }, body: JSON.stringify({ type: 'news', n: 2 }) })
  checkEqual(again.status, 200, 'second HTTP push status')
  await (again.text())
  for (const x of [n1, n2]) {
    await waitFor(() => eventFrom(x, 'news', (e) => e.n === 2), `${x.name}: the second HTTP-pushed news`)
    checkEqual(x.seen.news.map((e) => e.n), [1, 2], `${x.name}: refused HTTP pushes must not be delivered`)
    check(x.seen.error.length === 0, `${x.name}: no error frames`)
  }
  closeAll(n1, n2)
  await waitFor(() => n1.closed && n2.closed, 'N1 and N2: close')

  // ---- nothing unexpected --------------------------------------------------------------------
  begin('quiet')
  await sleep(QUIET_MS)
  checkEqual(b.seen.error.length, 1, 'B: exactly one error frame (the invalid JSON)')
  checkEqual(a.seen.error.length, 1, 'A: exactly one error frame (the unknown uid)')
  check(d.frames.every((e) => e.type === 'join'), 'D (push only) receives at most its self-join')

  if (expectedExtension) {
    check(negotiated.length > 0, 'sockets opened')
    for (const names of negotiated) checkEqual(names, expectedExtension, 'the extension every socket negotiated')
  }

  clearTimeout(hardTimeout)
  const extensions = [...new Set(negotiated)]
  process.stdout.write(JSON.stringify({ ok: true, checks, steps, prefix, extensions }) + '\n')
  process.exit(0)
}

main().catch((err) => fail(`unexpected error: ${err?.stack ?? err}`))
