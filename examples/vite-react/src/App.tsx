import { useEffect, useRef, useState } from 'react'
import type { BlobRef, SyncStatus } from 'rangersync'
import { useCollection, useSyncClient, useSynced, useSyncStatus } from 'rangersync/react'
import 'rangersync/status-element'
import type { RangersyncStatus } from 'rangersync/status-element'
import { API_URL } from './sync'

// The package's <rangersync-status> element in JSX.
declare module 'react' {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace JSX {
    interface IntrinsicElements {
      'rangersync-status': React.DetailedHTMLProps<React.HTMLAttributes<RangersyncStatus>, RangersyncStatus>
    }
  }
}

interface Note {
  text: string
  /** An attached image: kept by putBlob, uploaded by the worker, read back with getBlob. */
  image?: BlobRef
}

/** An attachment, from this browser or (on another device) the sync server. */
function Attachment({ blobRef }: { blobRef: BlobRef }) {
  const client = useSyncClient()
  const [url, setUrl] = useState<string | null>(null)
  const [problem, setProblem] = useState('')
  useEffect(() => {
    if (!client) return
    let shown: string | null = null
    client.getBlob(blobRef).then(
      (blob) => {
        shown = URL.createObjectURL(blob)
        setUrl(shown)
      },
      (err: { code?: string }) => setProblem(err.code ?? 'error'),
    )
    return () => {
      if (shown) URL.revokeObjectURL(shown)
    }
  }, [client, blobRef])
  if (problem) return <span className="attachment-missing">{` (image: ${problem})`}</span>
  return url ? <img className="attachment" src={url} alt={blobRef.$blob.name ?? ''} width={80} /> : null
}

interface Chat {
  id: string
  messages: string[]
}

const CHAT_ID = 'chat-1'

/** One word for the status, as the demo app shows it. */
function indicator(s: SyncStatus | null): string {
  if (!s) return 'Starting…'
  if (s.state === 'auth_error') return 'Auth error'
  if (s.state === 'config_error') return 'Config error'
  if (s.state === 'error') return 'Error'
  if (s.state === 'offline') return 'Offline'
  if (s.state === 'syncing') return 'Syncing…'
  if (s.pending > 0) return `Pending ${s.pending}`
  return 'Saved'
}

export default function App() {
  const client = useSyncClient()
  const status = useSyncStatus()
  // Re-rendered on a change from any tab, and as pending notes are delivered.
  const notes = useCollection<Note>('notes') ?? []
  const [noteText, setNoteText] = useState('')
  const [chat, setChat] = useState<Chat>({ id: CHAT_ID, messages: [] })
  const [chatText, setChatText] = useState('')
  const [lastSend, setLastSend] = useState({ message: '', result: '' })
  // The draft is saved as it is typed, with no button (useSynced is client.autosave): reloading
  // or closing the tab right after a keystroke keeps it, and another tab's edits show here.
  const [draft, setDraft, draftStatus] = useSynced<Note>('drafts', 'draft-1', { text: '' })

  // The drop-in indicator: give the element the client.
  const indicatorRef = useRef<RangersyncStatus>(null)
  useEffect(() => {
    if (indicatorRef.current) indicatorRef.current.client = client ?? null
  }, [client])

  async function attachImage(file: File) {
    if (!client) return
    const image = await client.putBlob(file)
    await client.put('notes', `n${Date.now()}`, { text: file.name, image })
  }

  async function saveNote() {
    await client?.put('notes', `n${Date.now()}`, { text: noteText })
    setNoteText('')
  }

  // RangerPlex's way: POST the whole chat to its REST API. With the API down, the worker answers
  // 202 and replays the call later, in order, after any call to the same route queued before.
  async function sendMessage() {
    const message = chatText
    const next: Chat = { ...chat, messages: [...chat.messages, message] }
    setChat(next)
    setChatText('')
    let result: string
    try {
      const response = await fetch(`${API_URL}/api/sync/chat`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(next),
      })
      result = response.status === 202 ? 'queued' : response.ok ? 'sent' : `failed (${response.status})`
    } catch (err) {
      result = `failed (${String(err)})`
    }
    setLastSend({ message, result })
  }

  return (
    <main>
      <h1>rangersync + Vite + React</h1>
      <rangersync-status id="indicator" ref={indicatorRef} />
      <p
        id="status"
        data-state={status?.state ?? ''}
        data-pending={status?.pending ?? ''}
        data-mode={status?.mode ?? ''}
      >
        {indicator(status)}
        {status?.mode === 'page' ? ` (page mode: ${status.fallback_reason ?? ''})` : ''}
        {status?.last_error ? ` · ${status.last_error.message}` : ''}
      </p>

      <section>
        <h2>Notes (put → rangersync server)</h2>
        <input id="note-text" value={noteText} onChange={(e) => setNoteText(e.target.value)} />
        <button id="save-note" onClick={() => void saveNote()} disabled={!noteText || !client}>
          Save note
        </button>
        <label>
          Attach image{' '}
          <input
            id="note-image"
            type="file"
            accept="image/*"
            disabled={!client}
            onChange={(e) => {
              const file = e.target.files?.[0]
              e.target.value = ''
              if (file) void attachImage(file)
            }}
          />
        </label>
        <ul id="notes">
          {notes.map((n) => (
            <li key={n.key}>
              {n.value.text}
              {n.pending ? ' (pending)' : ''}
              {n.value.image ? <Attachment blobRef={n.value.image} /> : null}
            </li>
          ))}
        </ul>
      </section>

      <section>
        <h2>Draft (autosave, no button)</h2>
        <textarea
          id="draft"
          value={draft.text}
          onChange={(e) => setDraft({ text: e.target.value })}
        />
        <p id="draft-state">{draftStatus?.state ?? ''}</p>
      </section>

      <section>
        <h2>Chat (fetch → the app's API)</h2>
        <input id="chat-text" value={chatText} onChange={(e) => setChatText(e.target.value)} />
        <button id="send-chat" onClick={() => void sendMessage()} disabled={!chatText}>
          Send
        </button>
        <p id="last-send" data-message={lastSend.message}>
          {lastSend.result}
        </p>
        <ol id="messages">
          {chat.messages.map((m, i) => (
            <li key={i}>{m}</li>
          ))}
        </ol>
      </section>
    </main>
  )
}
