// relaycore's browser client: the itty-sockets API, over a WebSocket where one gets through
// and over plain HTTP where not. One ES module, no build step, no dependency; every relay
// serves it at /client.js.
//
//   import { connect } from 'https://relay.example/client.js'
//
//   const room = connect('lobby', { alias: 'Ann', announce: true })
//     .on('join', (event) => console.log(event.alias ?? 'someone', 'came;', event.total, 'here'))
//     .on('chat', (event) => console.log(event.alias, 'says', event.text))
//     .send({ type: 'chat', text: 'hello' })
//
// Theory of operation. connect() returns the channel object at once. It connects on first
// use (.on, .send or .open) and keeps what is sent before that, in order, for the moment it
// is in the channel. Connecting tries each way of `transports`, in order, until one is in:
//
//   'websocket'  the channel's URL with an upgrade: frames both ways;
//   'sse'        an EventSource on the channel's URL: the relay's `session` event names a
//                token, every frame is a message event; each message sent is a POST to
//                /s/<token> (one at a time, so they keep their order), DELETE leaves;
//   'poll'       a GET of the channel's URL with Accept: application/json, then GET
//                /s/<token> over and over (the relay holds each until a frame comes);
//                sending as for 'sse'.
//
// A way that has neither opened nor failed after `wait` ms (3000) is dropped for the next.
// When the WebSocket never opened and a later way did, that way is remembered for this relay
// (localStorage, for `remember` ms, an hour): the next connect starts there, without waiting
// on a WebSocket again (and when none opens from there, the memory goes). Once a way has
// opened, its end is the channel's close, whatever the way: nothing is retried behind the
// caller's back, and .open() connects anew.
//
// The events are those of the stock itty-sockets client, in its shapes. Each frame from the
// relay is one event: the frame itself, with a relayed message's payload (when it is an
// object) spread under it, so that { uid, alias, date, message: { type: 'chat', text } }
// comes as { type: 'chat', text, uid, alias, date, message }. It goes to the listeners of
// its `type` (the relay's own, 'join', 'leave' or 'error', else the payload's), then, when
// the relay gave it no type (a relayed or pushed message), to the 'message' listeners, then
// to '*' and to the filters of .on(filter, listener). 'open' listeners are called with
// nothing, 'close' listeners with { code, reason }. A payload's type never calls the 'open'
// or 'close' listeners, which belong to the connection.

const TRANSPORTS = ['websocket', 'sse', 'poll']
const WAIT = 3000
const REMEMBER = 60 * 60 * 1000
const POLL_RETRIES = 3
const POLL_PAUSE = 1000
const SEPARATOR = '\x1f'
const HERE = import.meta.url
const OWN_EVENTS = new Set(['open', 'close'])

/**
 * A channel of a relay, as the itty-sockets client's connect() gives one.
 *
 * @param {string} target a channel name (on the relay this module came from), or the full
 *   URL of a channel: ws://, wss://, http:// or https:// <relay>/c/<channel>.
 * @param {object} [options] the channel's options, sent in its query string: alias,
 *   announce, echo, list, joinKey, sendKey.
 * @param {object} [settings] how to connect: `transports` (the ways to try, in order;
 *   ['websocket', 'sse', 'poll']), `wait` (ms before giving up on one; 3000), `remember`
 *   (ms to remember a fallback for; an hour; 0: never).
 * @returns {Channel}
 */
export function connect (target, options = {}, settings = {}) {
  return new Channel(locate(target, options), settings)
}

/** A channel: every method returns the channel, and works detached from it (`setTimeout(room.open)`). */
class Channel {
  #where
  #order
  #wait
  #remember
  #listeners = {}
  #queue = [] // [text, uid] of the messages sent before the channel opened
  #link = null // the way in use, once open
  #transport = null // its name
  #connecting = false
  #closing = false // close once the queue has gone (.close() or .push() before opening)
  #ending = false // the way in use was told to close

  constructor (where, settings) {
    this.#where = where
    this.#order = (settings.transports ?? TRANSPORTS).filter((name) => name in LINKS)
    this.#wait = settings.wait ?? WAIT
    this.#remember = settings.remember ?? REMEMBER
    for (const name of ['open', 'close', 'send', 'push', 'on', 'remove']) this[name] = this[name].bind(this)
  }

  /** The way in use: 'websocket', 'sse' or 'poll'; null while not in the channel. */
  get transport () {
    return this.#transport
  }

  /** Connect, unless connected or connecting. */
  open () {
    if (this.#link || this.#connecting) return this
    this.#connecting = true
    const memory = recall(this.#where, this.#order)
    const order = this.#order
    this.#attempt(memory ? order.slice(order.indexOf(memory)) : order, 0, memory, null)
    return this
  }

  /** Leave the channel (once what was sent before it opened has gone). */
  close () {
    if (this.#link && !this.#ending) {
      this.#ending = true
      this.#link.close()
    } else if (this.#connecting) {
      this.#closing = true
    }
    return this
  }

  /** Send `message` (any JSON value) to every other member, or to the member `uid` only. */
  send (message, uid) {
    const text = String(JSON.stringify(message)) // undefined goes as the text "undefined", as ever
    if (this.#link && !this.#ending) {
      this.#link.send(text, uid, this.#closing)
      this.#ending = this.#closing
      return this
    }
    this.#queue.push([text, uid])
    return this.open()
  }

  /** Send `message`, then leave: the others get it before the leave. */
  push (message, uid) {
    this.#closing = true
    return this.send(message, uid)
  }

  /** Call `listener` for events of `type` (a string), or for the events `type(event)` accepts. */
  on (type, listener) {
    if (listener) {
      const filtered = typeof type === 'function'
      const call = filtered ? (event) => type(event) && listener(event) : listener
      ;(this.#listeners[filtered ? '*' : type] ??= []).push(call)
    }
    return this.open()
  }

  /** Stop calling `listener` for events of `type`. */
  remove (type, listener) {
    this.#listeners[type] = (this.#listeners[type] ?? []).filter((known) => known !== listener)
    return this
  }

  #emit (type, event) {
    for (const listener of this.#listeners[type] ?? []) {
      try {
        listener(event)
      } catch (error) {
        report(error)
      }
    }
  }

  // One frame from the relay (JSON text, or already parsed): one event, see the top.
  #receive (data) {
    let frame = data
    if (typeof data === 'string') {
      try {
        frame = JSON.parse(data)
      } catch {
        return // the relay sends JSON only
      }
    }
    if (frame === null || typeof frame !== 'object') return
    const payload = frame.message
    const event = isRecord(payload) ? { ...payload, ...frame } : { ...frame }
    for (const type of new Set([event.type, frame.type ? null : 'message', '*'])) {
      if (type != null && !OWN_EVENTS.has(type)) this.#emit(type, event)
    }
  }

  // Try the way tries[index]; when it fails, the next; after the last, the channel closes.
  #attempt (tries, index, memory, failure) {
    const name = tries[index]
    if (name === undefined) {
      if (memory) forget(this.#where)
      this.#connecting = this.#closing = false
      this.#emit('close', failure ?? lost())
      return
    }
    let candidate = null
    const next = (why) => this.#attempt(tries, index + 1, memory, why)
    const timer = setTimeout(() => {
      candidate?.abandon()
      candidate = null
      next({ code: 1006, reason: `${name}: no answer in ${this.#wait} ms` })
    }, this.#wait)
    const events = {
      open: () => {
        clearTimeout(timer)
        // Remembered when the WebSocket never opened, or in place of a remembered way that failed.
        const websocket = tries.indexOf('websocket')
        if ((websocket >= 0 && websocket < index) || (memory && name !== memory)) {
          store(this.#where, name, this.#remember)
        }
        this.#opened(candidate, name)
      },
      frame: (data) => this.#receive(data),
      close: (info) => {
        clearTimeout(timer)
        if (this.#link === candidate) this.#ended(info)
        else next(info) // it never opened
      },
    }
    try {
      candidate = LINKS[name](this.#where, events)
    } catch (error) {
      // new WebSocket() throws for a URL the page may not open (ws:// from an https:// page)
      clearTimeout(timer)
      setTimeout(() => next({ code: 1006, reason: String(error) }))
    }
  }

  #opened (link, name) {
    this.#link = link
    this.#transport = name
    this.#connecting = false
    const items = this.#queue.splice(0)
    items.forEach(([text, uid], i) => link.send(text, uid, this.#closing && i === items.length - 1))
    if (this.#closing) {
      this.#ending = true
      if (!items.length) link.close()
    }
    this.#emit('open')
  }

  #ended (info) {
    this.#link = this.#transport = null
    this.#closing = this.#ending = false
    this.#emit('close', info)
  }
}

// -- where ---------------------------------------------------------------------------------

// The channel's URLs: `ws` for the WebSocket, `http` for the HTTP ways, and `root`, the
// relay's base, under which /s/<token> is.
function locate (target, options) {
  const url = /^(wss?|https?):\/\//i.test(target) ? new URL(target) : new URL(`c/${channelPath(target)}`, HERE)
  url.hash = ''
  for (const [name, value] of Object.entries(options ?? {})) {
    if (value != null) url.searchParams.set(name, value)
  }
  const http = new URL(url)
  http.protocol = http.protocol.replace(/^ws/, 'http')
  const ws = new URL(url)
  ws.protocol = ws.protocol.replace(/^http/, 'ws')
  const at = http.pathname.search(/\/[cr]\//)
  const root = new URL(at < 0 ? '/' : http.pathname.slice(0, at + 1), http)
  return { ws: ws.href, http: http.href, root: root.href }
}

// A channel name in a path: '/' and ':' (namespaces) kept, anything else that needs it escaped.
function channelPath (name) {
  return encodeURIComponent(String(name)).replace(/%2F/gi, '/').replace(/%3A/gi, ':')
}

// -- remembering a fallback ----------------------------------------------------------------

const memoryKey = (where) => `relaycore:transport:${where.root}`

function recall (where, order) {
  try {
    const saved = JSON.parse(localStorage.getItem(memoryKey(where)))
    if (saved && saved.until > Date.now() && order.includes(saved.name)) return saved.name
  } catch {} // no storage (a sandboxed page, a worker), or not ours
  return null
}

function store (where, name, ms) {
  if (!(ms > 0)) return
  try {
    localStorage.setItem(memoryKey(where), JSON.stringify({ name, until: Date.now() + ms }))
  } catch {}
}

function forget (where) {
  try {
    localStorage.removeItem(memoryKey(where))
  } catch {}
}

// -- the ways in ---------------------------------------------------------------------------
// Each takes the channel's URLs and { open(), frame(data), close({ code, reason }) }, calls
// open() once it is in the channel and close() once at its end (or never, once abandoned),
// and returns { send(text, uid, last), close(), abandon() }. None calls back before it
// returns.

const LINKS = { websocket: webSocketLink, sse: eventStreamLink, poll: longPollLink }

function webSocketLink (where, events) {
  const socket = new WebSocket(where.ws)
  let done = false
  socket.onopen = () => done || events.open()
  socket.onmessage = (message) => done || events.frame(message.data)
  socket.onclose = (closed) => {
    if (done) return
    done = true
    events.close({ code: closed.code, reason: closed.reason })
  }
  return {
    send (text, uid, last) {
      socket.send(uid ? SEPARATOR + uid + SEPARATOR + text : text)
      if (last) socket.close(1000)
    },
    close: () => socket.close(1000),
    abandon () {
      done = true
      socket.close()
    },
  }
}

function eventStreamLink (where, events) {
  const source = new EventSource(where.http)
  const link = httpLink(where, events, () => source.close())
  source.addEventListener('session', (event) => link.joined(JSON.parse(event.data).token))
  source.addEventListener('message', (event) => link.frame(event.data))
  source.addEventListener('close', (event) => link.end(closeOf(event.data)))
  // An EventSource reconnects by itself, which here would join as a new member: never.
  source.addEventListener('error', () => link.end(lost()))
  return link.way
}

function longPollLink (where, events) {
  const abort = new AbortController()
  const link = httpLink(where, events, () => abort.abort())
  const get = (url, headers) => fetch(url, { headers, cache: 'no-store', signal: abort.signal })
  const run = async () => {
    const first = await get(where.http, { accept: 'application/json' })
    if (!first.ok) return link.end({ code: 1006, reason: (await first.text()).trim() })
    const frames = await first.json()
    const token = first.headers.get('relay-session')
    if (!token) return link.end({ code: 1006, reason: 'no relay-session header' })
    link.joined(token)
    frames.forEach(link.frame)
    for (let failures = 0; !link.done;) {
      try {
        const answer = await get(link.session.url)
        if (answer.status === 404) return link.end(link.gone())
        if (!answer.ok) throw new Error(`GET /s/: ${answer.status}`)
        const more = await answer.json()
        failures = 0
        more.forEach(link.frame)
      } catch (error) {
        if (link.done) return
        if (++failures > POLL_RETRIES) return link.end(lost())
        await new Promise((resolve) => setTimeout(resolve, POLL_PAUSE))
      }
    }
  }
  run().catch(() => link.end(lost()))
  return link.way
}

// What the two HTTP ways share: the token's requests, the end, the leave when the page goes.
function httpLink (where, events, stop) {
  let leaving = false
  const bye = () => link.session?.bye()
  const link = {
    done: false,
    session: null,
    joined (token) {
      if (link.session || link.done) return
      link.session = sessionOf(where, token, link)
      globalThis.addEventListener?.('pagehide', bye)
      events.open()
    },
    frame: (data) => link.done || events.frame(data),
    end (info) {
      if (link.done) return
      link.done = true
      stop()
      globalThis.removeEventListener?.('pagehide', bye)
      events.close(info)
    },
    // The token is gone: after our own leave a normal close, else the relay's doing.
    gone: () => (leaving ? { code: 1000, reason: '' } : { code: 1005, reason: '' }),
    way: {
      send (text, uid, last) {
        leaving ||= last
        link.session.send(text, uid, last)
      },
      close () {
        leaving = true
        link.session.leave().then(() => link.end({ code: 1000, reason: '' }))
      },
      abandon () {
        link.done = true
        stop()
      },
    },
  }
  return link
}

// The requests of the member of `token`, one at a time and in order.
function sessionOf (where, token, link) {
  const url = new URL(`s/${encodeURIComponent(token)}`, where.root).href
  let chain = Promise.resolve()
  const answered = async (answer) => {
    if (answer.status === 404) return link.end(link.gone())
    // Too big to relay: the relay keeps the member and says so only here.
    if (answer.status === 413) link.frame({ type: 'error', message: (await answer.text()).trim(), date: Date.now() })
  }
  const request = (method, query, body) => {
    chain = chain
      .then(() => fetch(url + query, { method, body, cache: 'no-store' }))
      .then(answered)
      .catch(() => {}) // the network failed: the stream's (or the poll's) own end says so
    return chain
  }
  return {
    url,
    send (text, uid, last) {
      const query = [uid ? `to=${encodeURIComponent(uid)}` : '', last ? 'close' : ''].filter(Boolean).join('&')
      return request('POST', query ? `?${query}` : '', text)
    },
    leave: () => request('DELETE', ''),
    // The page is going away: no time to wait for the chain (keepalive outlives the page).
    bye: () => fetch(url, { method: 'DELETE', keepalive: true }).catch(() => {}),
  }
}

// -- small things --------------------------------------------------------------------------

function isRecord (value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

function lost () {
  return { code: 1006, reason: '' }
}

function closeOf (data) {
  try {
    const { code, reason } = JSON.parse(data)
    return { code, reason }
  } catch {
    return lost()
  }
}

function report (error) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(error)
  else setTimeout(() => { throw error })
}
