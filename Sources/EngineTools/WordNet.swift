import Engine
import Foundation

/// Real text available offline on Debian (`apt-get install wordnet-base`).
public enum WordNet {
    /// Where Debian's wordnet-base installs the database.
    public static let directory = "/usr/share/wordnet"

    /// The glosses (definitions, with examples) of all synsets, in file order (noun, verb, adj,
    /// adv): ~117k English sentences. Throws if the package is not installed.
    public static func glosses(directory: String = directory) throws -> [String] {
        var out: [String] = []
        for pos in ["noun", "verb", "adj", "adv"] {
            let path = directory + "/data." + pos
            guard let data = FileManager.default.contents(atPath: path) else {
                throw EngineError.io("cannot read \(path): install WordNet (apt-get install wordnet-base)")
            }
            // Latin-1: every byte is one character.
            let text = String(data.map { Character(Unicode.Scalar($0)) })
            for line in text.split(separator: "\n") where !line.hasPrefix("  ") {
                guard let bar = line.firstIndex(of: "|") else { continue }
                out.append(line[line.index(after: bar)...].trimmingCharacters(in: .whitespaces))
            }
        }
        return out
    }
}
