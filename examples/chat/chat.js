// A chat on one relaycore channel, through the relay's browser client (/client.js, see
// docs/browser-client.md): a WebSocket where one gets through, Server-Sent Events or
// long-poll where not, with the itty-sockets client's API.
//
// The page loads the client from the relay it talks to, and joins
// <relay>/c/<room>?alias=<name>&announce=true&list=true: `announce` puts us in the others'
// lists and makes our joins and leaves carry our uid, `list` makes the first event (the
// self-join) carry our uid and the announced members. From then on, the client's events:
//   'join', 'leave'  {type, uid?, alias?, total}   someone came or went: the list and a line
//   'error'          {type, message}               shown as an error line
//   'message'        {uid, alias?, date, message}  a relayed message (the relay gave it no
//                                                  type); chat lines are {"type":"chat","text":...}
// The client also hands a relayed message whose payload has a type to the listeners of that
// type, so a payload {"type":"join"} reaches the 'join' listeners too: those carry the
// payload in `message` (an object), which the relay's own events never do, and are skipped.
// A broadcast is .send(payload), a direct message .send(payload, uid). The relay's envelope
// is the same for both, so a direct payload also says whom it is for ("to": <uid>), which
// is how the recipient tells a DM from a broadcast.
//
// Every piece of user text reaches the page through textContent, never as HTML.

const params = new URLSearchParams(location.search)
const room = params.get('room') || 'lobby'
const relay = relayBase(params.get('relay'))
const keys = { joinKey: params.get('joinKey'), sendKey: params.get('sendKey') }

const ui = Object.fromEntries(
  ['status', 'room-name', 'leave', 'join-form', 'alias', 'room', 'count', 'members', 'log',
    'send-form', 'target-label', 'target-clear', 'text'].map((id) => [id, document.getElementById(id)]),
)

let channel = null // the client's channel while joining or joined, or null
let client = null // the import of the relay's /client.js, once asked for
let me = null // my uid, from the self-join event; null until joined
let total = 0 // connections in the channel, announced or not, me included
let target = null // the uid a message goes to directly, or null for everyone
const members = new Map() // uid -> alias ('' when none) of the announced members, in join order
const WAYS = { websocket: 'a WebSocket', sse: 'Server-Sent Events', poll: 'long-poll' }

// ?relay= (http(s)://host:port, or ws(s)://, which means the same) or, by default, the
// server that served this page.
function relayBase (given) {
  if (given) return given.trim().replace(/^ws/i, 'http').replace(/\/+$/, '')
  if (!location.host) return null // opened as a file: there is no server to ask
  return location.origin
}

function channelUrl () {
  const path = encodeURIComponent(room).replace(/%2F/gi, '/').replace(/%3A/gi, ':')
  return `${relay}/c/${path}`
}

// A relayed message that reached a 'join', 'leave' or 'error' listener by its payload's type.
function relayedLookalike (event) {
  return typeof event.message === 'object' && event.message !== null
}

// ---- state of the page ----------------------------------------------------------------

function setState (state, status) {
  document.body.dataset.state = state
  ui.status.textContent = status
  const joined = state === 'joined'
  ui['join-form'].hidden = state === 'connecting' || joined
  ui.leave.hidden = !joined
  ui['send-form'].hidden = !joined
  if (joined) ui.room.hidden = false
}

async function join (alias) {
  me = null
  members.clear()
  setTarget(null)
  setState('connecting', `Connecting to ${relay}…`)
  let connect
  try {
    ({ connect } = await (client ??= import(`${relay}/client.js`)))
  } catch {
    client = null
    setState('closed', `Could not load the client from ${relay}/client.js.`)
    return
  }
  const options = { alias, announce: true, list: true }
  for (const [name, value] of Object.entries(keys)) if (value) options[name] = value
  const current = channel = connect(channelUrl(), options)
  const mine = (handler) => (event) => { if (channel === current) handler(event) }
  current
    .on('join', mine((event) => relayedLookalike(event) || (event.self ? joinedSelf(event) : joined(event))))
    .on('leave', mine((event) => relayedLookalike(event) || left(event)))
    .on('error', mine((event) => relayedLookalike(event) || line('error', `Error: ${event.message}`)))
    .on('message', mine(relayed))
    .on('close', mine(closed))
}

function closed (event) {
  const wasIn = me !== null
  channel = null
  me = null
  members.clear()
  setTarget(null)
  renderMembers()
  let status
  const why = event.reason || `the relay at ${relay} refused the connection or is unreachable`
  if (!wasIn) status = `Could not join: ${why}.`
  else if (event.code === 1000) status = 'You left the room.'
  else status = `Disconnected (code ${event.code}${event.reason ? `: ${event.reason}` : ''}).`
  if (wasIn) line('system', status)
  setState('closed', status)
  ui.alias.focus()
}

// ---- events from the relay ------------------------------------------------------------

function joinedSelf (frame) {
  me = frame.uid
  total = frame.total
  for (const user of frame.users || []) members.set(user.uid, user.alias || '')
  if (!members.has(me)) members.set(me, frame.alias || '')
  renderMembers()
  document.body.dataset.transport = channel.transport
  setState('joined', `In room ${room} as ${frame.alias || me} (over ${WAYS[channel.transport]}).`)
  const others = total - 1
  line('system', `You joined ${room}. ${others === 0 ? 'Nobody else is here yet.' : `${others} other${others === 1 ? ' is' : 's are'} here.`}`)
  ui.text.focus()
}

function joined (frame) {
  total = frame.total
  if (frame.uid) members.set(frame.uid, frame.alias || '')
  renderMembers()
  line('system', `${frame.uid ? nameOf(frame.uid, frame.alias) : 'Someone (unlisted)'} joined.`)
}

function left (frame) {
  total = frame.total
  const name = frame.uid ? nameOf(frame.uid, frame.alias) : 'Someone (unlisted)'
  if (frame.uid) members.delete(frame.uid)
  if (frame.uid && frame.uid === target) setTarget(null)
  renderMembers()
  line('system', `${name} left.`)
}

function relayed (frame) {
  const { message } = frame
  const from = frame.uid ? nameOf(frame.uid, frame.alias) : 'pushed'
  if (message && message.type === 'chat' && typeof message.text === 'string') {
    const direct = message.to !== undefined && message.to === me
    say({ from, fromUid: frame.uid, text: message.text, date: frame.date, direct })
  } else {
    say({ from, fromUid: frame.uid, text: JSON.stringify(message), date: frame.date, other: true })
  }
}

// ---- sending --------------------------------------------------------------------------

function send (text) {
  if (!channel || me === null) return
  if (target) {
    channel.send({ type: 'chat', text, to: target }, target)
    say({ from: 'you', text, date: Date.now(), direct: true, to: nameOf(target) })
  } else {
    channel.send({ type: 'chat', text })
    say({ from: 'you', text, date: Date.now(), mine: true })
  }
}

function setTarget (uid) {
  target = uid
  ui['target-label'].textContent = uid ? `Direct message to ${nameOf(uid)}` : 'To everyone'
  ui['target-clear'].hidden = !uid
  ui['send-form'].classList.toggle('direct', Boolean(uid))
  for (const button of ui.members.querySelectorAll('button')) {
    button.setAttribute('aria-pressed', String(button.dataset.uid === uid))
  }
}

// ---- rendering ------------------------------------------------------------------------

function nameOf (uid, alias) {
  return alias || members.get(uid) || uid
}

function renderMembers () {
  const items = []
  for (const [uid, alias] of members) {
    const item = document.createElement('li')
    if (uid === me) {
      item.className = 'self'
      item.textContent = `${alias || uid} (you)`
    } else {
      const button = document.createElement('button')
      button.type = 'button'
      button.dataset.uid = uid
      button.textContent = alias || uid
      button.title = `Direct message to ${alias || uid} (${uid})`
      button.setAttribute('aria-pressed', String(uid === target))
      item.append(button)
    }
    items.push(item)
  }
  ui.members.replaceChildren(...items)
  const unlisted = Math.max(0, total - members.size)
  ui.count.textContent = me ? `(${total}${unlisted ? `, ${unlisted} unlisted` : ''})` : ''
}

function timeOf (date) {
  const when = new Date(date)
  const time = document.createElement('time')
  time.dateTime = when.toISOString()
  time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
  return time
}

function span (className, text) {
  const element = document.createElement('span')
  element.className = className
  element.textContent = text
  return element
}

function append (item) {
  const log = ui.log
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40
  log.append(item)
  if (atBottom) log.scrollTop = log.scrollHeight
}

// One chat line: "12:01 Bob: hello", "12:02 [direct] Bob → you: hi", "12:03 [direct] you → Ann: hi".
function say ({ from, fromUid, text, date, direct = false, mine = false, other = false, to }) {
  const item = document.createElement('li')
  item.className = ['msg', direct && 'dm', mine && 'mine', other && 'other'].filter(Boolean).join(' ')
  const who = span('who', direct ? `${from} → ${to || 'you'}` : from)
  if (fromUid) who.title = fromUid
  item.append(timeOf(date), ' ')
  if (direct) item.append(span('tag', 'direct'), ' ')
  item.append(who, ' ', span('text', text))
  append(item)
}

// A line about the room (joins, leaves) or an error.
function line (kind, text) {
  const item = document.createElement('li')
  item.className = kind
  item.append(timeOf(Date.now()), ' ', span('text', text))
  append(item)
}

// ---- wiring ---------------------------------------------------------------------------

ui['room-name'].textContent = room
ui.alias.value = params.get('alias') || ''

ui['join-form'].addEventListener('submit', (event) => {
  event.preventDefault()
  const alias = ui.alias.value.trim()
  if (alias && relay) join(alias)
})

ui['send-form'].addEventListener('submit', (event) => {
  event.preventDefault()
  const text = ui.text.value
  if (!text.trim()) return
  send(text)
  ui.text.value = ''
  ui.text.focus()
})

ui.members.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-uid]')
  if (!button) return
  setTarget(button.dataset.uid === target ? null : button.dataset.uid)
  ui.text.focus()
})

ui['target-clear'].addEventListener('click', () => {
  setTarget(null)
  ui.text.focus()
})

ui.leave.addEventListener('click', () => channel && channel.close())

// Until here, a name submitted would reload the page instead of joining.
document.body.dataset.state = 'idle'
if (relay) {
  ui.alias.focus()
} else {
  ui.status.textContent = 'Open this page from a web server, or name a relay: ?relay=ws://127.0.0.1:8787'
  ui['join-form'].querySelector('button').disabled = true
}
