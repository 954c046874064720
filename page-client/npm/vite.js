/* rangersync/vite: a Vite plugin that serves rangersync's service worker in `vite` (dev) and
 * emits it into the build, at the root of the site, so nothing is copied by hand.
 *
 *   // vite.config.ts
 *   import rangersync from 'rangersync/vite';
 *   export default defineConfig({ plugins: [react(), rangersync()] });
 *
 * What it does:
 * - serves and emits `sw.js`, `rangersync-worker.js`, `rangersync_sw.js` and the wasm it names
 *   (`rangersync_sw_bg.<hash>.wasm`) from the installed package under the app's `base` (`/` by
 *   default: the worker's scope is the folder of `sw.js`, and `SyncClient.register` registers it
 *   at `/`);
 * - stamps `sw.js` with the package version and a hash of the worker files, so an upgrade of
 *   the package is a new worker version for the browser (it installs it, the page module
 *   re-sends its configuration) and the worker never runs files from two versions;
 * - keeps Vite's dependency pre-bundler away from the page module (its glue finds its wasm with
 *   `new URL(…, import.meta.url)` and loads the extras lazily, which pre-bundling breaks), and
 *   lets the dev server read the package's folder even when it is a symlink outside the project
 *   (`npm install ../path/to/rangersync`).
 *
 * Option (an unknown key or a wrong type throws):
 * - swFile: the name of the whole worker to serve and emit (default 'sw.js'), or null for an app
 *   with a worker of its own, which gets only the library and imports it:
 *   `importScripts('/rangersync-worker.js'); rangersync.listen({ pkgUrl: '/' });`
 */
import { createHash } from 'node:crypto';
import { readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE_DIR = dirname(fileURLToPath(import.meta.url));
const PACKAGE_NAME = 'rangersync';
/** The scripts the worker imports, beside `sw.js`; the glue names the wasm. */
const LIBRARY_SCRIPTS = ['rangersync-worker.js', 'rangersync_sw.js'];
const GLUE = 'rangersync_sw.js';
/** The glue's last line: `self.rangersync_wasm_file = 'rangersync_sw_bg.<hash>.wasm';`. */
const WASM_NAME = /^self\.rangersync_wasm_file = '(rangersync_sw_bg\.[0-9a-f]{16}\.wasm)';$/m;
const WHOLE_WORKER = 'sw.js';
const OPTION_KEYS = ['swFile'];
const CONTENT_TYPES = { js: 'text/javascript; charset=utf-8', wasm: 'application/wasm' };

function fail(message) {
  const err = new TypeError(`rangersync/vite: ${message}`);
  err.code = 'invalid_config';
  throw err;
}

function checkOptions(options) {
  if (options === undefined || options === null) return { swFile: WHOLE_WORKER };
  if (typeof options !== 'object' || Array.isArray(options)) fail('options must be an object');
  for (const key of Object.keys(options)) {
    if (!OPTION_KEYS.includes(key)) {
      fail(`unknown option ${JSON.stringify(key)} (known: ${OPTION_KEYS.join(', ')})`);
    }
  }
  let swFile = options.swFile === undefined ? WHOLE_WORKER : options.swFile;
  if (swFile !== null && (typeof swFile !== 'string' || !/^[A-Za-z0-9._-]+\.js$/.test(swFile)
    || LIBRARY_SCRIPTS.includes(swFile))) {
    fail(`swFile must be null or a file name ending in .js other than ${LIBRARY_SCRIPTS.join(', ')} `
      + `(got ${JSON.stringify(swFile)})`);
  }
  return { swFile };
}

/** The files to serve and emit, read now: name → bytes. */
function workerFiles(swFile) {
  const read = (name) => {
    try {
      return readFileSync(join(PACKAGE_DIR, name));
    } catch (err) {
      throw new Error(`rangersync/vite: cannot read ${name} from the package at ${PACKAGE_DIR} `
        + `(${err.message}); reinstall the package`);
    }
  };
  const files = new Map(LIBRARY_SCRIPTS.map((name) => [name, read(name)]));
  const wasm = WASM_NAME.exec(files.get(GLUE).toString('utf8'));
  if (!wasm) {
    throw new Error(`rangersync/vite: ${GLUE} in the package at ${PACKAGE_DIR} names no wasm; `
      + 'reinstall the package');
  }
  files.set(wasm[1], read(wasm[1]));
  if (swFile !== null) {
    const { version } = JSON.parse(read('package.json').toString('utf8'));
    const hash = createHash('sha256');
    for (const bytes of files.values()) hash.update(bytes);
    const sw = read(WHOLE_WORKER);
    hash.update(sw);
    const stamp = `// rangersync ${version}, worker files ${hash.digest('hex').slice(0, 16)}\n`;
    files.set(swFile, Buffer.concat([Buffer.from(stamp), sw]));
  }
  return files;
}

export default function rangersync(options) {
  const { swFile } = checkOptions(options);
  let files = null;
  let base = '/';
  const load = () => {
    if (!files) files = workerFiles(swFile);
    return files;
  };
  return {
    name: 'rangersync',
    config() {
      return { optimizeDeps: { exclude: [PACKAGE_NAME] } };
    },
    configResolved(resolved) {
      base = resolved.base.endsWith('/') ? resolved.base : `${resolved.base}/`;
      // Added to what Vite resolved (the workspace root or the app's own list), not instead of
      // it. Through the real path: Vite serves a symlinked package from where it really is.
      resolved.server.fs.allow.push(realpathSync(PACKAGE_DIR));
    },
    configureServer(server) {
      load();
      server.middlewares.use((req, res, next) => {
        const path = (req.url ?? '').split('?')[0];
        if (!path.startsWith(base)) return next();
        const name = path.slice(base.length);
        const bytes = files.get(name);
        if (!bytes || (req.method !== 'GET' && req.method !== 'HEAD')) return next();
        res.statusCode = 200;
        res.setHeader('Content-Type', CONTENT_TYPES[name.split('.').pop()]);
        res.setHeader('Cache-Control', 'no-cache');
        res.end(req.method === 'HEAD' ? undefined : bytes);
      });
    },
    generateBundle() {
      for (const [fileName, source] of load()) {
        this.emitFile({ type: 'asset', fileName, source });
      }
    },
  };
}
