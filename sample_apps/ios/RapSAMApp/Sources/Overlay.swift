// Drawing results over the image: a translucent colour layer at image resolution (one CGImage, scaled with
// the photo so the two always line up) and text labels at segment centroids.

import CoreGraphics
import Foundation
import RapSAMKit
import SwiftUI

/// A text label at a point in image pixels.
struct OverlayLabel: Identifiable {
    let id: Int
    let text: String
    let x: Double
    let y: Double
}

enum Overlay {
    /// Colours for prompt masks, one per gesture in turn.
    static let maskPalette: [[Int]] = [[255, 64, 64], [64, 160, 255], [64, 220, 96], [255, 200, 0], [200, 80, 255], [0, 220, 220]]

    /// RGBA with premultiplied alpha: colour * alpha where a pixel is covered, transparent elsewhere.
    private static func layer(width: Int, height: Int, alpha: Int, colourAt: (Int) -> [Int]?) -> CGImage? {
        var rgba = [UInt8](repeating: 0, count: width * height * 4)
        for p in 0..<(width * height) {
            guard let colour = colourAt(p) else { continue }
            rgba[4 * p] = UInt8(colour[0] * alpha / 255)
            rgba[4 * p + 1] = UInt8(colour[1] * alpha / 255)
            rgba[4 * p + 2] = UInt8(colour[2] * alpha / 255)
            rgba[4 * p + 3] = UInt8(alpha)
        }
        return RGBAImage.makeCGImage(width: width, height: height, rgba: rgba, alpha: .premultipliedLast)
    }

    /// Each segment in its class colour (the manifest's `classes[].color`); void stays clear.
    static func panoptic(_ result: PanopticResult, box: Letterbox, classColors: [[Int]]) -> CGImage? {
        let colours: [[Int]?] = [nil] + result.segments.map { segment -> [Int]? in
            classColors.indices.contains(segment.classId) ? classColors[segment.classId] : [255, 255, 255]
        }
        return layer(width: box.imageW, height: box.imageH, alpha: 140) { p in
            let id = Int(result.segmentMap[p])
            return id > 0 && id < colours.count ? colours[id] : nil
        }
    }

    /// Prompt masks, later ones on top, each in the palette colour of its turn.
    static func masks(_ masks: [[Bool]], width: Int, height: Int) -> CGImage? {
        layer(width: width, height: height, alpha: 150) { p in
            for i in masks.indices.reversed() where masks[i][p] { return maskPalette[i % maskPalette.count] }
            return nil
        }
    }

    /// "class" for stuff, "class #id" for things with a track id, at each segment's centroid.
    static func labels(_ result: PanopticResult, box: Letterbox, classNames: [String], trackIds: [Int]?) -> [OverlayLabel] {
        var sumX = [Double](repeating: 0, count: result.segments.count + 1)
        var sumY = sumX, count = sumX
        for y in 0..<box.imageH {
            for x in 0..<box.imageW {
                let id = Int(result.segmentMap[y * box.imageW + x])
                guard id > 0, id < sumX.count else { continue }
                sumX[id] += Double(x)
                sumY[id] += Double(y)
                count[id] += 1
            }
        }
        return result.segments.enumerated().compactMap { (index, segment) -> OverlayLabel? in
            guard count[segment.id] > 0 else { return nil }
            var text = classNames.indices.contains(segment.classId) ? classNames[segment.classId] : "class \(segment.classId)"
            if let ids = trackIds, index < ids.count, ids[index] >= 0 { text += " #\(ids[index])" }
            return OverlayLabel(id: segment.id, text: text, x: sumX[segment.id] / count[segment.id] + 0.5,
                                y: sumY[segment.id] / count[segment.id] + 0.5)
        }
    }

    /// Where an image of `size` lands when scaled to fit `bounds` (as .scaledToFit() draws it, centred).
    static func fittedRect(imageSize: CGSize, in bounds: CGSize) -> CGRect {
        guard imageSize.width > 0, imageSize.height > 0 else { return .zero }
        let scale = min(bounds.width / imageSize.width, bounds.height / imageSize.height)
        let size = CGSize(width: imageSize.width * scale, height: imageSize.height * scale)
        return CGRect(x: (bounds.width - size.width) / 2, y: (bounds.height - size.height) / 2,
                      width: size.width, height: size.height)
    }
}

/// An image with its overlay and labels, scaled to fit the space it is given; `content` draws more on top in
/// the same frame (the drag rectangle).
struct OverlaidImage<Content: View>: View {
    let image: CGImage
    let overlays: [CGImage]
    let labels: [OverlayLabel]
    let content: (CGRect) -> Content

    init(image: CGImage, overlays: [CGImage], labels: [OverlayLabel], @ViewBuilder content: @escaping (CGRect) -> Content) {
        self.image = image
        self.overlays = overlays
        self.labels = labels
        self.content = content
    }

    var body: some View {
        GeometryReader { geometry in
            let rect = Overlay.fittedRect(imageSize: CGSize(width: image.width, height: image.height), in: geometry.size)
            let scale = rect.width / CGFloat(max(image.width, 1))
            ZStack(alignment: .topLeading) {
                Image(decorative: image, scale: 1).resizable().interpolation(.none)
                    .frame(width: rect.width, height: rect.height).position(x: rect.midX, y: rect.midY)
                ForEach(overlays.indices, id: \.self) { i in
                    Image(decorative: overlays[i], scale: 1).resizable().interpolation(.none)
                        .frame(width: rect.width, height: rect.height).position(x: rect.midX, y: rect.midY)
                }
                ForEach(labels) { label in
                    Text(label.text).font(.caption2.bold()).foregroundColor(.white)
                        .padding(.horizontal, 3).background(Color.black.opacity(0.55)).cornerRadius(3)
                        .position(x: rect.minX + label.x * scale, y: rect.minY + label.y * scale)
                }
                content(rect)
            }
        }
    }
}

extension OverlaidImage where Content == EmptyView {
    init(image: CGImage, overlays: [CGImage], labels: [OverlayLabel]) {
        self.init(image: image, overlays: overlays, labels: labels) { _ in EmptyView() }
    }
}
