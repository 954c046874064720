import { useEffect, useState } from 'react'
import type { SyncStatus } from 'rangersync'
import { client } from './sync'

/** The worker's status, live, in every tab (null until the client is registered). */
export function useSyncStatus(): SyncStatus | null {
  const [status, setStatus] = useState<SyncStatus | null>(null)
  useEffect(() => {
    let off = () => {}
    let live = true
    client.then((c) => {
      if (live) off = c.onStatus(setStatus)
    })
    return () => {
      live = false
      off()
    }
  }, [])
  return status
}
