// The app's one screen: runtime and mode pickers, the photo (tap = point prompt, drag = box prompt) or the
// camera view, and the latency readout.

import PhotosUI
import RapSAMKit
import SwiftUI

@MainActor
struct ContentView: View {
    @StateObject private var model = AppModel()
    @State private var pickerItem: PhotosPickerItem?
    @State private var dragStart: CGPoint?
    @State private var dragEnd: CGPoint?

    var body: some View {
        NavigationStack {
            VStack(spacing: 8) {
                controls
                ZStack {
                    Color.black
                    switch model.mode {
                    case .photo: photoView
                    case .camera: cameraView
                    }
                }
                latency
                Text(model.status).font(.footnote).foregroundColor(.secondary).lineLimit(3)
                    .frame(maxWidth: .infinity, alignment: .leading)
            }
            .padding(.horizontal)
            .navigationTitle("RAP-SAM")
            .navigationBarTitleDisplayMode(.inline)
            .toolbar {
                ToolbarItem(placement: .navigationBarTrailing) {
                    PhotosPicker(selection: $pickerItem, matching: .images) { Label("Photo", systemImage: "photo") }
                        .disabled(model.mode != .photo)
                }
            }
        }
        .task(id: model.runtime) { await model.load() }  // at launch and whenever the runtime changes
        .task(id: model.mode) { await model.modeChanged() }
        .task(id: pickerItem) {
            guard let item = pickerItem else { return }
            do {
                if let data = try await item.loadTransferable(type: Data.self) { await model.openPhoto(data) }
            } catch {
                print("cannot load the photo: \(error)")
            }
        }
    }

    private var controls: some View {
        VStack(spacing: 6) {
            Picker("Runtime", selection: $model.runtime) {
                ForEach(Runtime.allCases) { runtime in
                    Text(runtime.isCompiledIn ? runtime.title : "\(runtime.title) (not built in)").tag(runtime)
                }
            }
            .pickerStyle(.segmented)
            .disabled(model.busy)
            Picker("Mode", selection: $model.mode) {
                Text("Photo").tag(AppModel.Mode.photo)
                Text("Camera").tag(AppModel.Mode.camera)
            }
            .pickerStyle(.segmented)
            HStack {
                Text(model.artifactName ?? "no model").font(.caption).lineLimit(1).truncationMode(.middle)
                Spacer()
                if model.busy { ProgressView() }
                Toggle("Panoptic", isOn: $model.showPanoptic).fixedSize().font(.caption)
                Button("Clear") { model.clearPrompts() }.font(.caption).disabled(model.mode != .photo)
            }
        }
    }

    @ViewBuilder
    private var photoView: some View {
        if let photo = model.photo, let size = model.imageSize {
            OverlaidImage(image: photo,
                          overlays: [model.showPanoptic ? model.photoPanoptic : nil, model.maskLayer].compactMap { $0 },
                          labels: model.showPanoptic ? model.photoLabels : []) { rect in
                if let start = dragStart, let end = dragEnd, distance(start, end) >= Self.tapSlop {
                    Rectangle().stroke(Color.yellow, lineWidth: 2)
                        .frame(width: abs(end.x - start.x), height: abs(end.y - start.y))
                        .position(x: (start.x + end.x) / 2, y: (start.y + end.y) / 2)
                }
                Color.clear.contentShape(Rectangle()).gesture(promptGesture(in: rect, imageSize: size))
            }
        } else {
            Text("Pick a photo: tap it for a point prompt, drag for a box").foregroundColor(.gray).padding()
        }
    }

    @ViewBuilder
    private var cameraView: some View {
        if let frame = model.cameraFrame {
            OverlaidImage(image: frame, overlays: [model.showPanoptic ? model.cameraOverlay : nil].compactMap { $0 },
                          labels: model.showPanoptic ? model.cameraLabels : [])
        } else {
            Text("Starting the camera…").foregroundColor(.gray)
        }
    }

    private var latency: some View {
        HStack(spacing: 12) {
            metric("encode", model.encodeMs)
            metric("click→mask", model.clickToMaskMs)
            metric("frame", model.frameMs)
            if let fps = model.fps, model.mode == .camera {
                Text(String(format: "%.1f fps", fps)).font(.caption.monospacedDigit())
            }
        }
        .frame(maxWidth: .infinity, alignment: .leading)
    }

    private func metric(_ name: String, _ ms: Double?) -> some View {
        Text("\(name) \(ms.map { String(format: "%.1f ms", $0) } ?? "–")").font(.caption.monospacedDigit())
    }

    // MARK: gestures

    /// Movement below this many points is a tap (a point prompt); more is a box.
    private static let tapSlop: CGFloat = 8

    private func distance(_ a: CGPoint, _ b: CGPoint) -> CGFloat { hypot(a.x - b.x, a.y - b.y) }

    /// Tap = point prompt, drag = box prompt; view points are mapped into image pixels through the rect the
    /// image is drawn in.
    private func promptGesture(in rect: CGRect, imageSize: CGSize) -> some Gesture {
        DragGesture(minimumDistance: 0)
            .onChanged { value in
                dragStart = value.startLocation
                dragEnd = value.location
            }
            .onEnded { value in
                dragStart = nil
                dragEnd = nil
                guard rect.width > 0 else { return }
                let scale = imageSize.width / rect.width
                func pixel(_ p: CGPoint) -> (Double, Double) {
                    (Double(min(max((p.x - rect.minX) * scale, 0), imageSize.width)),
                     Double(min(max((p.y - rect.minY) * scale, 0), imageSize.height)))
                }
                if distance(value.startLocation, value.location) < Self.tapSlop {
                    guard rect.contains(value.location) else { return }  // a tap beside the image
                    let (x, y) = pixel(value.location)
                    Task { await model.prompt(points: [[x, y]]) }
                } else {
                    let (x0, y0) = pixel(value.startLocation), (x1, y1) = pixel(value.location)
                    let box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
                    guard box[2] - box[0] >= 1, box[3] - box[1] >= 1 else { return }
                    Task { await model.prompt(boxes: [box]) }
                }
            }
    }
}
