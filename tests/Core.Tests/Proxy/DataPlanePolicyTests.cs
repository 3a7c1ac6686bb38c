using System.Text.RegularExpressions;
using ProxyPlanes.Model;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Core.Tests.Proxy;

/// <summary>
/// Policy is decided once, in Core: a data plane translates <c>ServicePortVerdict</c>s and never reads
/// traffic policies or raw endpoint categories itself. A plain source scan of src/Backends.*.
/// </summary>
public class DataPlanePolicyTests
{
    /// <summary>What only Core's policy may read: the traffic policies and the categorizer's inputs to verdicts.</summary>
    public static readonly string[] PolicyMembers =
    [
        "InternalPolicyLocal",
        "ExternalPolicyLocal",
        "UsesClusterEndpoints",
        "UsesLocalEndpoints",
        "HasAnyEndpoints",
        "EndpointsFor",
        // Topology: the hints and the service's trafficDistribution narrow endpoints in Core only.
        "ZoneHints",
        "NodeHints",
        "TrafficDistribution",
    ];

    private static readonly Regex PolicyRead = new(@"\b(" + string.Join("|", PolicyMembers) + @")\b", RegexOptions.Compiled);

    [Fact]
    public void DataPlanes_NeverReadTrafficPolicy()
    {
        var sources = DataPlaneSources().ToList();
        Assert.NotEmpty(sources);

        var reads = sources.SelectMany(path => File.ReadLines(path).Select((line, i) => (path, line, number: i + 1)))
            .Where(l => PolicyRead.IsMatch(l.line))
            .Select(l => $"{Path.GetRelativePath(RepoPaths.Root, l.path)}:{l.number}: {l.line.Trim()}")
            .ToList();

        Assert.True(reads.Count == 0, "data planes must translate Core's verdicts, not read traffic policy:\n" + string.Join("\n", reads));
    }

    [Fact]
    public void Scan_FindsAPolicyRead()
    {
        // Positive control: the pattern catches the reads the planners used to make, and not their look-alikes.
        Assert.Matches(PolicyRead, "var internalEndpoints = info.InternalPolicyLocal ? local : cluster;");
        Assert.Matches(PolicyRead, "!Local.IsEmpty && EndpointCategorizer.UsesLocalEndpoints(Info)");
        Assert.Matches(PolicyRead, "var endpoints = port.EndpointsFor(family);");
        Assert.DoesNotMatch(PolicyRead, "if (!verdict.ExternalMasquerade) Entry(IpvsNames.LoadBalancerLocal, ip);");
        Assert.Contains(DataPlaneSources(), p => p.EndsWith("IptablesPlanner.cs", StringComparison.Ordinal));
        Assert.Contains(DataPlaneSources(), p => p.EndsWith("NftablesPlanner.cs", StringComparison.Ordinal));
        Assert.Contains(DataPlaneSources(), p => p.EndsWith("IpvsPlanner.cs", StringComparison.Ordinal));
    }

    private static IEnumerable<string> DataPlaneSources() =>
        Directory.GetDirectories(Path.Combine(RepoPaths.Root, "src"), "Backends.*")
            .SelectMany(dir => Directory.EnumerateFiles(dir, "*.cs", SearchOption.AllDirectories))
            .Where(path => !path.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !path.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal);
}
