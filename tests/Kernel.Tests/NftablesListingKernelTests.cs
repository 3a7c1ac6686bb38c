using System.Text;
using System.Text.Json.Nodes;
using ProxyPlanes.Backends.Nftables;
using ProxyPlanes.Sandbox;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// The tables NftablesTracerTests trace without a kernel are the kernel's own: each case's
/// nft.golden loaded by nft into a fresh namespace and listed with <c>nft -j list table</c> must
/// be exactly testdata/CASE/nft.json (and nft6.json for IPv6), handles left out. Regenerate with
/// UPDATE_GOLDEN=1 after the planner changes (the unit tests also notice a listing that no longer
/// has the planner's chains and elements).
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class NftablesListingKernelTests
{
    /// <summary>The golden cases whose listings the tracer's unit tests read.</summary>
    public static readonly string[] TracedCases =
    [
        "dual-stack", "external-ips", "external-policy-local", "external-policy-local-no-local-endpoints",
        "loadbalancer-source-ranges", "no-endpoints", "session-affinity", "udp",
    ];

    public static IEnumerable<object[]> Cases() => TracedCases.Select(c => new object[] { c });

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task GoldenTransaction_ListedByNft_IsTheTracersTestTable(string caseName)
    {
        var dir = Path.Combine(RepoPaths.TestData, caseName);
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-nftj");
        var apply = await ns.ExecAsync(["nft", "-f", Path.Combine(dir, "nft.golden")], TimeSpan.FromSeconds(30));
        Assert.True(apply.Succeeded, $"{caseName}: nft -f: {apply.StandardError}");

        var families = File.ReadAllText(Path.Combine(dir, "nft.golden")).Contains("add table ip6 ", StringComparison.Ordinal) ? new[] { "ip", "ip6" } : ["ip"];
        foreach (var family in families)
        {
            var listed = await ns.ExecAsync(["nft", "-j", "list", "table", family, NftNames.Table], TimeSpan.FromSeconds(30));
            Assert.True(listed.Succeeded, listed.StandardError);
            var path = Path.Combine(dir, family == "ip" ? "nft.json" : "nft6.json");
            var text = Normalize(listed.StandardOutput);
            if (Environment.GetEnvironmentVariable("UPDATE_GOLDEN") == "1")
            {
                File.WriteAllText(path, text);
                continue;
            }
            Assert.True(File.Exists(path), $"{path} is missing: run this test with UPDATE_GOLDEN=1 and review the new file");
            Assert.Equal(File.ReadAllText(path), text);
        }
    }

    /// <summary>nft's JSON without metainfo and handles (they depend on the kernel's history), one object a line.</summary>
    private static string Normalize(string json)
    {
        var items = JsonNode.Parse(json)!["nftables"]!.AsArray();
        var text = new StringBuilder("{\"nftables\": [\n");
        var first = true;
        foreach (var item in items)
        {
            var o = item!.AsObject();
            if (o.ContainsKey("metainfo")) continue;
            foreach (var (_, value) in o)
                if (value is JsonObject inner) inner.Remove("handle");
            text.Append(first ? "" : ",\n").Append(o.ToJsonString());
            first = false;
        }
        return text.Append("\n]}\n").ToString();
    }
}
