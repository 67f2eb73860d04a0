import { defineConfig } from 'vite';

// Relative base: the build runs from any folder or sub-path of a static server.
export default defineConfig({ base: './', build: { target: 'es2022' } });
