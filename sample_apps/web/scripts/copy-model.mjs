// Puts a converted ONNX artifact (a folder written by `rapsam-convert --target onnx [--vectors]`) and
// onnxruntime-web's wasm files under public/, so that the build serves everything itself: nothing is fetched
// from elsewhere at run time.   npm run model -- ../../artifacts/rapsam_edgenext_demo-128x128-onnx
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const artifact = process.argv[2];
if (!artifact) {
  console.error('usage: npm run model -- ARTIFACT_FOLDER   (a folder written by rapsam-convert --target onnx)');
  process.exit(2);
}
const manifestPath = join(artifact, 'manifest.json');
if (!existsSync(manifestPath)) {
  console.error(`error: ${manifestPath} not found: convert first, e.g. rapsam-convert --target onnx --vectors`);
  process.exit(2);
}
const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
if (manifest.target?.name !== 'onnx') {
  console.error(`error: ${artifact} is a ${manifest.target?.name} artifact; the web app runs ONNX (--target onnx)`);
  process.exit(2);
}
const missing = ['segment', 'encode', 'prompt'].filter((entry) => !manifest.entry_points[entry]);
if (missing.length) {
  console.error(`error: ${artifact} lacks the entry points ${missing.join(', ')}: convert with all of them`);
  process.exit(2);
}

const model = join(root, 'public', 'model');
rmSync(model, { recursive: true, force: true });
mkdirSync(model, { recursive: true });
cpSync(manifestPath, join(model, 'manifest.json'));
for (const entry of Object.values(manifest.entry_points)) cpSync(join(artifact, entry.file), join(model, entry.file));
if (existsSync(join(artifact, 'vectors'))) cpSync(join(artifact, 'vectors'), join(model, 'vectors'), { recursive: true });

const ort = join(root, 'public', 'ort');
const dist = join(root, 'node_modules', 'onnxruntime-web', 'dist');
rmSync(ort, { recursive: true, force: true });
mkdirSync(ort, { recursive: true });
for (const name of readdirSync(dist)) {
  if (/^ort-wasm-simd-threaded(\.\w+)?\.(wasm|mjs)$/.test(name)) cpSync(join(dist, name), join(ort, name));
}
console.log(`model ${manifest.model.name} ${manifest.input_size.join('x')} -> public/model (runtime files -> public/ort)`);
