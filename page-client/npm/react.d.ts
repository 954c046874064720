import type { ReactNode } from 'react';
import type { AutosaveOptions, AutosaveStatus, ListItem, SyncClient, SyncStatus } from './rangersync_page.js';

/** Props of {@link SyncProvider}. */
export interface SyncProviderProps {
  /** The page's one client, or the promise `SyncClient.register(…)` returns. */
  client: SyncClient | Promise<SyncClient>;
  children?: ReactNode;
}

/**
 * Makes `client` the one the hooks use. Until a promised client resolves, hooks return their
 * "not yet" values (`null`, `undefined`, `initial`).
 */
export function SyncProvider(props: SyncProviderProps): ReactNode;

/** The provider's client, or `null` while it registers. */
export function useSyncClient(): SyncClient | null;

/** The worker's status, live in every tab; `null` until the client is registered. */
export function useSyncStatus(): SyncStatus | null;

/**
 * Every live entity of `collection`, read again whenever one of them changes (a write in any
 * tab, a pulled change, a resolved conflict) and when the outbox's pending count changes (so
 * each item's `pending` follows delivery); `undefined` until the first read.
 */
export function useCollection<T = unknown>(collection: string): ListItem<T>[] | undefined;

/**
 * `[value, setValue, status]` for one entity, saved as it changes with `client.autosave`.
 *
 * - `value` starts as `initial`, becomes the stored value once read (unless set before), and
 *   follows writes of the same entity from other tabs while nothing of this hook's waits.
 * - `setValue(next)` or `setValue(previous => next)`: throws the autosave's `SyncError`
 *   (`invalid_value`, `value_too_large`) for a value that cannot be stored; the state is then
 *   unchanged.
 * - `status` is the autosave's, `null` until the stored value is read.
 *
 * On unmount, or when `collection` or `key` changes, what waits is written.
 */
export function useSynced<T>(
  collection: string,
  key: string,
  initial: T,
  options?: AutosaveOptions,
): [T, (next: T | ((previous: T) => T)) => void, AutosaveStatus | null];
