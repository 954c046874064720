import { StrictMode } from 'react'
import { createRoot } from 'react-dom/client'
import { SyncProvider } from 'rangersync/react'
import App from './App'
import { client } from './sync'

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <SyncProvider client={client}>
      <App />
    </SyncProvider>
  </StrictMode>,
)
