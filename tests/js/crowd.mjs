// The stock itty-sockets client in a big channel: it still shows the channel's current total.
//
//   node tests/js/crowd.mjs ws://127.0.0.1:8787 <channel> <members> <leaving>
//
// The channel must be one whose join and leave events the relay coalesces above a bound lower
// than <members> (`presence_coalesce_above`). An itty-sockets client (the observer) joins
// first and keeps the `total` of the last join or leave event it hears, as an application
// would. Then <members> - 1 plain WebSocket members join, and <leaving> of them leave again.
// Exit 0 with one JSON summary line on stdout when the observer's total reached each count;
// exit 1 with the reason on stderr otherwise. Bounded by a hard timeout.

import { connect } from 'itty-sockets'
import WebSocket from 'ws'

const OVERALL_TIMEOUT_MS = 30_000
const STEP_TIMEOUT_MS = 10_000

const [base, channel, membersArg, leavingArg] = process.argv.slice(2)
const members = Number(membersArg)
const leaving = Number(leavingArg)
if (!base || !/^wss?:\/\//.test(base) || !channel || !(members > 1) || !(leaving >= 0 && leaving < members)) {
  process.stderr.write('usage: node crowd.mjs ws://HOST:PORT CHANNEL MEMBERS LEAVING\n')
  process.exit(2)
}
globalThis.WebSocket = WebSocket

const events = []
let total
let step = 'start'

function fail(message) {
  process.stderr.write(`FAIL [step: ${step}] ${message}\n  last events: ${JSON.stringify(events.slice(-10))}\n`)
  process.exit(1)
}

const hardTimeout = setTimeout(() => fail(`overall timeout of ${OVERALL_TIMEOUT_MS} ms exceeded`), OVERALL_TIMEOUT_MS)
process.on('uncaughtException', (err) => fail(`uncaught exception: ${err?.stack ?? err}`))

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function waitFor(predicate, label) {
  const deadline = Date.now() + STEP_TIMEOUT_MS
  while (!predicate()) {
    if (Date.now() > deadline) fail(`timed out after ${STEP_TIMEOUT_MS} ms waiting for ${label} (total ${total})`)
    await sleep(10)
  }
}

function member() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base}/c/${channel}`)
    ws.on('message', () => resolve(ws)) // its self-join: it is in
    ws.on('error', reject)
  })
}

async function main() {
  step = 'observer'
  const observer = connect(`${base}/c/${channel}`)
  let self
  observer.on('join', (e) => { if (e.self) self = e; else events.push(e); total = e.total })
  observer.on('leave', (e) => { events.push(e); total = e.total })
  await waitFor(() => self, "the observer's self-join")

  step = 'crowd-joins'
  const crowd = []
  for (let i = 1; i < members; i++) crowd.push(await member())
  await waitFor(() => total === members, `a total of ${members}`)
  const joinEvents = events.length
  if (joinEvents >= members - 1) fail(`the observer heard ${joinEvents} join events for ${members - 1} joins: nothing was coalesced`)
  const last = events[events.length - 1]
  if ('uid' in last || last.type !== 'join') fail(`the last event should be a coalesced join: ${JSON.stringify(last)}`)

  step = 'crowd-leaves'
  await Promise.all(crowd.splice(0, leaving).map((ws) => new Promise((resolve) => { ws.on('close', resolve); ws.close() })))
  await waitFor(() => total === members - leaving, `a total of ${members - leaving}`)
  const leaveEvents = events.length - joinEvents
  if (leaveEvents >= leaving) fail(`the observer heard ${leaveEvents} leave events for ${leaving} leaves: nothing was coalesced`)

  clearTimeout(hardTimeout)
  observer.close()
  for (const ws of crowd) ws.close()
  process.stdout.write(JSON.stringify({ ok: true, members, leaving, joinEvents, leaveEvents, total }) + '\n')
  process.exit(0)
}

main().catch((err) => fail(`unexpected error: ${err?.stack ?? err}`))
