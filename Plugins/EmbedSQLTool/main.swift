import Foundation

// Usage: bitfleet-embed-sql OUTPUT.swift FILE.sql...
// Writes `let embeddedMigrations: [(name: String, sql: String)]` with each file's text as a raw string literal.
let arguments = CommandLine.arguments.dropFirst()
guard let output = arguments.first else {
    FileHandle.standardError.write(Data("usage: bitfleet-embed-sql OUTPUT.swift FILE.sql...\n".utf8))
    exit(2)
}
var source = "// Generated from Migrations/*.sql by the EmbedMigrations plugin. Do not edit.\n"
source += "let embeddedMigrations: [(name: String, sql: String)] = [\n"
for path in arguments.dropFirst() {
    let name = URL(fileURLWithPath: path).lastPathComponent
    let sql = try String(contentsOfFile: path, encoding: .utf8)
    // A raw string delimiter longer than any run of '#' in the file keeps the SQL verbatim.
    var hashes = "#"
    while sql.contains("\"" + hashes) || sql.contains(hashes + "\"") { hashes += "#" }
    source += "    (name: \(hashes)\"\(name)\"\(hashes), sql: \(hashes)\"\"\"\n\(sql)\n\"\"\"\(hashes)),\n"
}
source += "]\n"
try source.write(toFile: output, atomically: true, encoding: .utf8)
