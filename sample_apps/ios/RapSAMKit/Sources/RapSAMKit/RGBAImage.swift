// Pixels in the layout `letterbox` takes: 8-bit RGBA rows, from a file (ImageIO), a CGImage or a camera
// CVPixelBuffer, and back to a CGImage for display.

import CoreGraphics
import CoreVideo
import Foundation
import ImageIO

public struct RGBAImage {
    public var width: Int
    public var height: Int
    /// width * height * 4 bytes, R G B A per pixel, rows top to bottom.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// Draws `image` into an RGBA context of its own RGB colour space (sRGB for others), so that no colour
    /// conversion moves the pixel values away from what PIL decodes (the test vectors compare them).
    public init(cgImage image: CGImage) throws {
        let space = image.colorSpace.flatMap { $0.model == .rgb ? $0 : nil } ?? CGColorSpace(name: CGColorSpace.sRGB)!
        var pixels = [UInt8](repeating: 0, count: image.width * image.height * 4)
        let drawn = pixels.withUnsafeMutableBytes { bytes -> Bool in
            guard let context = CGContext(data: bytes.baseAddress, width: image.width, height: image.height,
                                          bitsPerComponent: 8, bytesPerRow: image.width * 4, space: space,
                                          bitmapInfo: CGImageAlphaInfo.premultipliedLast.rawValue) else { return false }
            context.interpolationQuality = .none
            context.draw(image, in: CGRect(x: 0, y: 0, width: image.width, height: image.height))
            return true
        }
        guard drawn else { throw PipelineError("cannot draw a \(image.width)x\(image.height) image into an RGBA context") }
        self.init(width: image.width, height: image.height, pixels: pixels)
    }

    /// A PNG or JPEG file, decoded as stored (no EXIF rotation, no scaling): what the test vectors hold.
    public init(contentsOf url: URL) throws {
        guard let source = CGImageSourceCreateWithURL(url as CFURL, nil),
              let image = CGImageSourceCreateImageAtIndex(source, 0, nil) else {
            throw PipelineError("cannot decode \(url.path)")
        }
        try self.init(cgImage: image)
    }

    /// An image file's bytes (a photo from the picker) turned upright by its EXIF orientation and scaled down
    /// to at most `maxSide` pixels: the merge runs at image resolution, so a 12 MP photo would cost seconds.
    public init(data: Data, maxSide: Int) throws {
        let options: [CFString: Any] = [
            kCGImageSourceCreateThumbnailFromImageAlways: true,
            kCGImageSourceCreateThumbnailWithTransform: true,
            kCGImageSourceThumbnailMaxPixelSize: maxSide,
        ]
        guard let source = CGImageSourceCreateWithData(data as CFData, nil),
              let image = CGImageSourceCreateThumbnailAtIndex(source, 0, options as CFDictionary) else {
            throw PipelineError("cannot decode the image")
        }
        try self.init(cgImage: image)
    }

    /// A camera frame (kCVPixelFormatType_32BGRA, as the video data output is asked for) as RGBA.
    public init(pixelBuffer buffer: CVPixelBuffer) throws {
        guard CVPixelBufferGetPixelFormatType(buffer) == kCVPixelFormatType_32BGRA else {
            throw PipelineError("expected a 32BGRA pixel buffer")
        }
        CVPixelBufferLockBaseAddress(buffer, .readOnly)
        defer { CVPixelBufferUnlockBaseAddress(buffer, .readOnly) }
        guard let base = CVPixelBufferGetBaseAddress(buffer)?.assumingMemoryBound(to: UInt8.self) else {
            throw PipelineError("pixel buffer has no base address")
        }
        let w = CVPixelBufferGetWidth(buffer), h = CVPixelBufferGetHeight(buffer)
        let rowBytes = CVPixelBufferGetBytesPerRow(buffer)
        var pixels = [UInt8](repeating: 255, count: w * h * 4)
        pixels.withUnsafeMutableBufferPointer { out in
            for y in 0..<h {
                let row = base + y * rowBytes
                for x in 0..<w {
                    let o = 4 * (y * w + x)
                    out[o] = row[4 * x + 2]
                    out[o + 1] = row[4 * x + 1]
                    out[o + 2] = row[4 * x]
                }
            }
        }
        self.init(width: w, height: h, pixels: pixels)
    }

    /// For display (opaque RGBA, sRGB).
    public func cgImage() -> CGImage? {
        Self.makeCGImage(width: width, height: height, rgba: pixels, alpha: .noneSkipLast)
    }

    /// An RGBA buffer as a CGImage; `alpha` .premultipliedLast for overlays whose colours are premultiplied.
    public static func makeCGImage(width: Int, height: Int, rgba: [UInt8], alpha: CGImageAlphaInfo) -> CGImage? {
        guard width > 0, height > 0, rgba.count >= width * height * 4,
              let provider = CGDataProvider(data: Data(rgba) as CFData) else { return nil }
        return CGImage(width: width, height: height, bitsPerComponent: 8, bitsPerPixel: 32, bytesPerRow: width * 4,
                       space: CGColorSpace(name: CGColorSpace.sRGB)!, bitmapInfo: CGBitmapInfo(rawValue: alpha.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    }

    /// The first channel of an 8-bit grey PNG (a segment map or a 0/255 mask of the test vectors), row by row.
    public static func grayPixels(contentsOf url: URL) throws -> (width: Int, height: Int, values: [UInt8]) {
        guard let source = CGImageSourceCreateWithURL(url as CFURL, nil),
              let image = CGImageSourceCreateImageAtIndex(source, 0, nil) else {
            throw PipelineError("cannot decode \(url.path)")
        }
        let width = image.width, height = image.height
        // An 8-bit grey image is read byte for byte: drawing could convert grey levels through colour spaces.
        if image.bitsPerPixel == 8, image.bitsPerComponent == 8, image.colorSpace?.model == .monochrome,
           let data = image.dataProvider?.data.map({ $0 as Data }) {
            var values = [UInt8](repeating: 0, count: width * height)
            data.withUnsafeBytes { bytes in
                for y in 0..<height {
                    for x in 0..<width { values[y * width + x] = bytes[y * image.bytesPerRow + x] }
                }
            }
            return (width, height, values)
        }
        let rgba = try RGBAImage(cgImage: image)
        return (width, height, (0..<(width * height)).map { rgba.pixels[4 * $0] })
    }
}
