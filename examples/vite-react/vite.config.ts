import react from '@vitejs/plugin-react'
import rangersync from 'rangersync/vite'
import { defineConfig } from 'vite'

// rangersync() serves sw.js and the worker's files in `vite` and emits them into the build,
// at the root of the site, stamped with the package version.
export default defineConfig({
  plugins: [react(), rangersync()],
})
