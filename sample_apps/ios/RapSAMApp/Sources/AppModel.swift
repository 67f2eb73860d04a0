// The app's state: which artifact runs, the photo with its panoptic overlay and prompt masks, the camera
// view with track ids, and the latencies. Every pipeline call runs on one serial queue (pipelines and
// segmenters are not thread-safe); the results come back to the main actor for SwiftUI.

import CoreGraphics
import Foundation
import RapSAMKit

@MainActor
final class AppModel: ObservableObject {
    enum Mode: String, CaseIterable, Identifiable {
        case photo, camera
        var id: String { rawValue }
    }

    @Published var runtime: Runtime = .coreml
    @Published var mode: Mode = .photo
    @Published var showPanoptic = true
    @Published private(set) var artifactName: String?
    @Published private(set) var status = ""
    @Published private(set) var busy = false

    // photo: the image, its panoptic layer and labels, the prompt masks so far
    @Published private(set) var photo: CGImage?
    @Published private(set) var photoPanoptic: CGImage?
    @Published private(set) var photoLabels: [OverlayLabel] = []
    @Published private(set) var maskLayer: CGImage?

    // camera: the last frame segmented, its overlay and track labels
    @Published private(set) var cameraFrame: CGImage?
    @Published private(set) var cameraOverlay: CGImage?
    @Published private(set) var cameraLabels: [OverlayLabel] = []

    // latencies in ms: encode of the photo, gesture to mask on screen, one camera frame end to end
    @Published private(set) var encodeMs: Double?
    @Published private(set) var clickToMaskMs: Double?
    @Published private(set) var frameMs: Double?
    @Published private(set) var fps: Double?

    private var pipeline: Pipeline?
    private var manifest: Manifest?
    private var image: RGBAImage?
    private var encoded: EncodedImage?
    private var masks: [[Bool]] = []
    private var lastFrameEnd: DispatchTime?
    private let worker = DispatchQueue(label: "rapsam.pipeline", qos: .userInitiated)
    private let camera = CameraCapture()

    var imageSize: CGSize? { image.map { CGSize(width: $0.width, height: $0.height) } }

    /// Runs `body` on the pipeline queue (@Sendable: the closure must not inherit the main actor's isolation).
    private func onWorker<T>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            worker.async { continuation.resume(with: Result { try body() }) }
        }
    }

    private static func milliseconds(since start: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
    }

    // MARK: model

    /// Open the first bundled artifact of the chosen runtime (compiling Core ML packages takes a few seconds).
    func load() async {
        camera.stop()
        pipeline = nil
        encoded = nil
        artifactName = nil
        guard runtime.isCompiledIn else {
            status = "\(runtime.title) is not in this build: generate the project from project-executorch.yml"
            return
        }
        guard let artifact = Artifacts.all().first(where: { $0.runtime == runtime }) else {
            status = "no \(runtime.title) artifact in Models/: run rapsam-convert --target \(runtime.rawValue), then build again"
            return
        }
        busy = true
        defer { busy = false }
        status = "loading \(artifact.name)…"
        do {
            let started = DispatchTime.now()
            let (pipeline, manifest) = try await Artifacts.open(artifact)
            self.pipeline = pipeline
            self.manifest = manifest
            artifactName = artifact.name
            status = "\(manifest.model.name) on \(pipeline.segmenter.runtime), loaded in \(Int(Self.milliseconds(since: started))) ms"
        } catch {
            status = "cannot open \(artifact.name): \(error)"
            return
        }
        if let image { await segmentPhoto(image) }
        if mode == .camera { await startCamera() }
    }

    func modeChanged() async {
        switch mode {
        case .photo: camera.stop()
        case .camera: await startCamera()
        }
    }

    // MARK: photo

    /// A photo from the picker: segment it (panoptic overlay) and encode it once for the prompts to come.
    func openPhoto(_ data: Data) async {
        do {
            let image = try RGBAImage(data: data, maxSide: 1024)
            self.image = image
            photo = image.cgImage()
            await segmentPhoto(image)
        } catch {
            status = "cannot read the photo: \(error)"
        }
    }

    private func segmentPhoto(_ image: RGBAImage) async {
        masks = []
        maskLayer = nil
        encoded = nil
        photoPanoptic = nil
        photoLabels = []
        guard let pipeline, let manifest else { return }
        busy = true
        defer { busy = false }
        do {
            let colors = manifest.classes.map(\.color), names = manifest.classes.map(\.name)
            let (encoded, layer, labels) = try await onWorker { () -> (EncodedImage, CGImage?, [OverlayLabel]) in
                let (result, _, box) = try pipeline.panoptic(rgba: image.pixels, width: image.width, height: image.height)
                let encoded = try pipeline.encode(rgba: image.pixels, width: image.width, height: image.height)
                return (encoded, Overlay.panoptic(result, box: box, classColors: colors),
                        Overlay.labels(result, box: box, classNames: names, trackIds: nil))
            }
            self.encoded = encoded
            photoPanoptic = layer
            photoLabels = labels
            encodeMs = pipeline.timer.last("encode")
            status = "\(labels.count) segments; tap for a point prompt, drag for a box"
        } catch {
            status = "segmenting failed: \(error)"
        }
    }

    /// One gesture's prompt (a point [x, y] or a box [x0, y0, x1, y1] in image pixels) on the encoded photo;
    /// its mask joins the earlier ones.
    func prompt(points: [[Double]] = [], boxes: [[Double]] = []) async {
        guard let pipeline, let encoded, let image else { return }
        let started = DispatchTime.now()
        do {
            let earlier = masks
            let (result, layer) = try await onWorker { () -> (PromptResult, CGImage?) in
                let result = try pipeline.prompt(encoded: encoded, points: points, boxes: boxes)
                return (result, Overlay.masks(earlier + result.masks, width: image.width, height: image.height))
            }
            masks = earlier + result.masks
            maskLayer = layer
            // Gesture end to the mask ready to draw: what the user waits for, queue hop and drawing included.
            clickToMaskMs = Self.milliseconds(since: started)
            status = "prompt \(masks.count): predicted IoU \(String(format: "%.3f", result.iou.first ?? 0))"
        } catch {
            status = "prompt failed: \(error)"
        }
    }

    func clearPrompts() {
        masks = []
        maskLayer = nil
    }

    // MARK: camera

    func startCamera() async {
        guard mode == .camera else { return }
        guard await CameraCapture.requestAccess() else {
            status = "no camera access: allow it in Settings > Privacy & Security > Camera"
            return
        }
        guard let pipeline, let manifest else { return }
        camera.onFrame = Self.frameHandler(pipeline: pipeline, manifest: manifest, worker: worker, model: self)
        lastFrameEnd = nil
        status = "camera: panoptic segments with track ids"
        camera.start { [weak self] message in Task { @MainActor in self?.status = "camera: \(message)" } }
    }

    /// What the camera calls with each accepted frame: track it on the pipeline queue, draw its overlay there,
    /// and hand the pictures to the main actor. Built outside the main actor on purpose: the camera calls it on
    /// its own queue.
    private nonisolated static func frameHandler(pipeline: Pipeline, manifest: Manifest, worker: DispatchQueue,
                                                 model: AppModel) -> (RGBAImage, @escaping () -> Void) -> Void {
        let colors = manifest.classes.map(\.color), names = manifest.classes.map(\.name)
        let tracker = QueryTracker()  // a new video: ids from 0
        return { [weak model] frame, done in
            worker.async {
                defer { done() }
                do {
                    let tracked = try pipeline.trackFrame(tracker: tracker, rgba: frame.pixels, width: frame.width, height: frame.height)
                    let overlay = Overlay.panoptic(tracked.panoptic, box: tracked.box, classColors: colors)
                    let labels = Overlay.labels(tracked.panoptic, box: tracked.box, classNames: names, trackIds: tracked.instanceIds)
                    let picture = frame.cgImage()
                    let ms = pipeline.timer.last("frame")
                    Task { @MainActor in model?.show(frame: picture, overlay: overlay, labels: labels, frameMs: ms) }
                } catch {
                    Task { @MainActor in model?.status = "frame failed: \(error)" }
                }
            }
        }
    }

    private func show(frame: CGImage?, overlay: CGImage?, labels: [OverlayLabel], frameMs: Double?) {
        guard mode == .camera else { return }
        cameraFrame = frame
        cameraOverlay = overlay
        cameraLabels = labels
        self.frameMs = frameMs
        let now = DispatchTime.now()
        if let last = lastFrameEnd {
            fps = 1000 / max(Double(now.uptimeNanoseconds - last.uptimeNanoseconds) / 1e6, 1e-3)
        }
        lastFrameEnd = now
    }
}
