import type { Plugin } from 'vite';

/** Options of the `rangersync/vite` plugin. */
export interface RangersyncViteOptions {
  /**
   * The name of the whole worker served and emitted at the app's `base` (default `'sw.js'`),
   * or `null` for an app with a service worker of its own, which then gets only
   * `rangersync-worker.js` and the worker's wasm and imports the library itself.
   */
  swFile?: string | null;
}

/**
 * Serves rangersync's service worker files in `vite` (dev) and emits them into the build at the
 * app's `base`, stamped with the package version so that an upgrade is a new worker version.
 */
export default function rangersync(options?: RangersyncViteOptions): Plugin;
