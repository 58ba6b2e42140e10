"""Real-browser tests: Playwright driving Debian's Chromium, with axe-core, keyboard-only
navigation and Chromium's virtual WebAuthn authenticator."""
