using ProxyPlanes.Sandbox;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>Every golden iptables script is accepted by the real iptables-restore (both variants).</summary>
[Collection(KernelCollection.Name)]
public sealed class GoldenRulesKernelTests
{
    public static IEnumerable<object[]> Cases() =>
        from dir in Directory.GetDirectories(RepoPaths.TestData).Order(StringComparer.Ordinal)
        where File.Exists(Path.Combine(dir, "iptables.golden"))
        from variant in new[] { "nft", "legacy" }
        select new object[] { Path.GetFileName(dir), variant };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task GoldenScript_RestoredIntoFreshNamespace_IsAccepted(string caseName, string variant)
    {
        var dir = Path.Combine(RepoPaths.TestData, caseName);
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-gold");

        foreach (var file in new[] { "iptables.golden", "iptables-partial.golden", "ip6tables.golden" }.Where(f => File.Exists(Path.Combine(dir, f))))
        {
            var tool = file.StartsWith("ip6", StringComparison.Ordinal) ? "ip6tables" : "iptables";
            var restore = await ns.ExecAsync(["sh", "-c", $"{tool}-{variant}-restore --noflush < '{Path.Combine(dir, file)}'"], TimeSpan.FromSeconds(30));
            Assert.True(restore.Succeeded, $"{file}: {restore.StandardError}");
        }
    }
}
