import RapsamBench
import XCTest

/// Times every entry point bench.json names and prints one `RAPSAM_BENCH {json}` line for each.
final class RapsamBenchTests: XCTestCase {
    func testEntryPoints() throws {
        let resources = try XCTUnwrap(Bundle.module.url(forResource: "Resources", withExtension: nil))
        let artifact = resources.appendingPathComponent("artifact")
        let config = try BenchConfig.load(from: resources.appendingPathComponent("bench.json"))
        let manifest = try Manifest.load(from: artifact.appendingPathComponent("manifest.json"))
        var failed: [String] = []
        for entry in config.entryPoints {
            let result = Bench.measure(entry: entry, artifact: artifact, manifest: manifest, config: config)
            print(try result.line())
            fflush(stdout)
            if result.status != "ok" {
                failed.append(entry)
            }
        }
        XCTAssert(failed.isEmpty, "failed entry points: \(failed.joined(separator: ", "))")
    }
}
