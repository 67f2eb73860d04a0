// Camera frames for the live panoptic view: AVCaptureSession with a video data output, at most one frame in
// flight. A frame taken while the previous one is still being segmented is dropped, so the latency shown is
// the model's, not a growing queue's.

import AVFoundation
import RapSAMKit

final class CameraCapture: NSObject, AVCaptureVideoDataOutputSampleBufferDelegate {
    let session = AVCaptureSession()
    private let sessionQueue = DispatchQueue(label: "rapsam.camera.session")  // startRunning blocks
    private let videoQueue = DispatchQueue(label: "rapsam.camera.frames")
    private let lock = NSLock()
    private var inFlight = false
    private var configured = false

    /// Called on the video queue with each accepted frame (upright RGBA); call `done` once it is processed,
    /// from any queue: until then every new frame is dropped.
    var onFrame: ((RGBAImage, @escaping () -> Void) -> Void)?

    static func requestAccess() async -> Bool {
        switch AVCaptureDevice.authorizationStatus(for: .video) {
        case .authorized: return true
        case .notDetermined: return await AVCaptureDevice.requestAccess(for: .video)
        default: return false
        }
    }

    /// Configure once and start; errors (no camera in the simulator, no permission) come back to `failed`.
    func start(failed: @escaping (String) -> Void) {
        sessionQueue.async { [self] in
            do {
                if !configured {
                    try configure()
                    configured = true
                }
                if !session.isRunning { session.startRunning() }
            } catch {
                failed("\(error)")
            }
        }
    }

    func stop() {
        sessionQueue.async { [self] in
            if session.isRunning { session.stopRunning() }
        }
    }

    private func configure() throws {
        session.beginConfiguration()
        defer { session.commitConfiguration() }
        // The merge runs at frame resolution (as the Python reference does): VGA keeps a frame to tens of ms.
        if session.canSetSessionPreset(.vga640x480) { session.sessionPreset = .vga640x480 }
        guard let device = AVCaptureDevice.default(.builtInWideAngleCamera, for: .video, position: .back) else {
            throw PipelineError("no back camera (the simulator has none): use a photo")
        }
        let input = try AVCaptureDeviceInput(device: device)
        guard session.canAddInput(input) else { throw PipelineError("cannot use the camera as input") }
        session.addInput(input)
        let output = AVCaptureVideoDataOutput()
        output.videoSettings = [kCVPixelBufferPixelFormatTypeKey as String: kCVPixelFormatType_32BGRA]
        output.alwaysDiscardsLateVideoFrames = true
        output.setSampleBufferDelegate(self, queue: videoQueue)
        guard session.canAddOutput(output) else { throw PipelineError("cannot add a video data output") }
        session.addOutput(output)
        // Frames arrive in the sensor's landscape orientation: have them rotated to portrait, as the app shows them.
        if let connection = output.connection(with: .video) {
            if #available(iOS 17.0, *) {
                if connection.isVideoRotationAngleSupported(90) { connection.videoRotationAngle = 90 }
            } else if connection.isVideoOrientationSupported {
                connection.videoOrientation = .portrait
            }
        }
    }

    func captureOutput(_ output: AVCaptureOutput, didOutput sampleBuffer: CMSampleBuffer, from connection: AVCaptureConnection) {
        lock.lock()
        if inFlight {
            lock.unlock()
            return
        }
        inFlight = true
        lock.unlock()
        // The pixels are copied out here: the capture pipeline recycles its buffers once this call returns.
        guard let onFrame, let buffer = CMSampleBufferGetImageBuffer(sampleBuffer),
              let frame = try? RGBAImage(pixelBuffer: buffer) else {
            finish()
            return
        }
        onFrame(frame) { [weak self] in self?.finish() }
    }

    private func finish() {
        lock.lock()
        inFlight = false
        lock.unlock()
    }
}
