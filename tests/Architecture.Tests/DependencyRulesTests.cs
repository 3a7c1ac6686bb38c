using System.Reflection;
using NetArchTest.Rules;

namespace ProxyPlanes.Architecture.Tests;

/// <summary>
/// Who may reference whom, on the built assemblies (docs/design.md, "Projects"). Two views of each
/// rule: NetArchTest reads every type's dependencies (a use through a fully qualified name or a
/// using alias counts), and the assembly references, followed transitively, catch what a project
/// reference drags in even when no type of ours names it yet.
/// </summary>
public sealed class DependencyRulesTests
{
    private static readonly Assembly Model = typeof(ProxyPlanes.Model.DesiredState).Assembly;
    private static readonly Assembly NodeTools = typeof(ProxyPlanes.NodeTools.ExternalCommand).Assembly;
    private static readonly Assembly Metrics = typeof(ProxyPlanes.Metrics.ProxyMetrics).Assembly;
    private static readonly Assembly DataPlane = typeof(ProxyPlanes.DataPlane.IProxyMode).Assembly;
    private static readonly Assembly Core = typeof(ProxyPlanes.Core.Proxy.ProxyController).Assembly;
    private static readonly Assembly Sources = typeof(ProxyPlanes.Sources.Kubernetes.KubernetesSource).Assembly;
    private static readonly Assembly Web = typeof(ProxyPlanes.Web.ServiceHealthServer).Assembly;
    private static readonly Assembly Netlink = typeof(ProxyPlanes.Netlink.IpvsClient).Assembly;
    private static readonly Assembly IptablesTools = typeof(ProxyPlanes.Iptables.IptablesCommandApplier).Assembly;
    private static readonly Assembly Daemon = typeof(ProxyPlanes.CleanupCommand).Assembly;

    /// <summary>The data planes, by the namespace each one owns.</summary>
    private static readonly Dictionary<string, Assembly> DataPlanes = new()
    {
        ["ProxyPlanes.Backends.Iptables"] = typeof(ProxyPlanes.Backends.Iptables.IptablesMode).Assembly,
        ["ProxyPlanes.Backends.Nftables"] = typeof(ProxyPlanes.Backends.Nftables.NftablesMode).Assembly,
        ["ProxyPlanes.Backends.Ipvs"] = typeof(ProxyPlanes.Backends.Ipvs.IpvsMode).Assembly,
        ["ProxyPlanes.Backends.Ebpf"] = typeof(ProxyPlanes.Backends.Ebpf.BpfObject).Assembly,
    };

    public static TheoryData<string> DataPlaneNames => [.. DataPlanes.Keys];

    [Theory]
    [MemberData(nameof(DataPlaneNames))]
    public void DataPlane_ReferencesNoOtherDataPlane_NoSource_NoWebServer_NotTheLoop(string name)
    {
        string[] forbidden =
        [
            .. DataPlanes.Keys.Where(other => other != name),
            "ProxyPlanes.Sources", "ProxyPlanes.Web", "ProxyPlanes.Core", "ProxyPlanes.Sandbox", "ProxyPlanes.Lab",
            "Microsoft.AspNetCore", "YamlDotNet",
        ];

        AssertNoDependency(DataPlanes[name], forbidden);
        AssertNoAssemblyReachable(DataPlanes[name], forbidden);
    }

    [Fact]
    public void Model_DependsOnNothingOfOurs_AndOnNoPackage()
    {
        string[] ours =
        [
            "ProxyPlanes.Core", "ProxyPlanes.Metrics", "ProxyPlanes.NodeTools", "ProxyPlanes.DataPlane", "ProxyPlanes.Sources",
            "ProxyPlanes.Web", "ProxyPlanes.Backends", "ProxyPlanes.Netlink", "ProxyPlanes.Iptables",
        ];

        AssertNoDependency(Model, ours);
        // Only the framework: no project and no package reference at all.
        var references = Model.GetReferencedAssemblies().Select(a => a.Name!).ToArray();
        Assert.All(references, name => Assert.True(name.StartsWith("System", StringComparison.Ordinal) || name is "netstandard" or "mscorlib", $"the model references {name}"));
    }

    [Fact]
    public void Loop_ReferencesOnlyTheModel_NeitherAspNetCoreNorYamlNorAMetricsLibrary()
    {
        string[] forbidden =
        [
            "ProxyPlanes.Sources", "ProxyPlanes.Web", "ProxyPlanes.Backends", "ProxyPlanes.DataPlane", "ProxyPlanes.Netlink",
            "ProxyPlanes.Iptables", "ProxyPlanes.Sandbox", "ProxyPlanes.Metrics", "ProxyPlanes.NodeTools",
            "Microsoft.AspNetCore", "YamlDotNet", "Prometheus", "prometheus-net",
        ];

        AssertNoDependency(Core, forbidden);
        AssertNoAssemblyReachable(Core, forbidden);
    }

    [Fact]
    public void Netlink_KnowsNoKubernetesAndNothingElseOfOurs()
    {
        AssertNoDependency(Netlink, ["ProxyPlanes.Model", "ProxyPlanes.Core", "ProxyPlanes.Sources", "ProxyPlanes.Backends", "ProxyPlanes.NodeTools", "ProxyPlanes.Metrics"]);
        Assert.DoesNotContain(Netlink.GetReferencedAssemblies(), a => a.Name!.StartsWith("ProxyPlanes.", StringComparison.Ordinal));
    }

    [Fact]
    public void ToolLayers_ReferenceNoDataPlaneNoSourceNoLoop()
    {
        string[] forbidden = ["ProxyPlanes.Backends", "ProxyPlanes.Sources", "ProxyPlanes.Core", "ProxyPlanes.Web", "ProxyPlanes.DataPlane", "Microsoft.AspNetCore"];
        foreach (var layer in new[] { IptablesTools, NodeTools })
        {
            AssertNoDependency(layer, forbidden);
            AssertNoAssemblyReachable(layer, forbidden);
        }
    }

    [Fact]
    public void MetricsAndModeContract_DoNotBringTheWebServer()
    {
        // A data plane registers its metrics and describes its mode; neither may carry Kestrel along.
        string[] forbidden = ["Microsoft.AspNetCore", "Prometheus.AspNetCore", "ProxyPlanes.Web", "ProxyPlanes.Core", "ProxyPlanes.Sources"];
        foreach (var assembly in new[] { Metrics, DataPlane })
        {
            AssertNoDependency(assembly, forbidden);
            AssertNoAssemblyReachable(assembly, forbidden);
        }
    }

    [Fact]
    public void Daemon_DoesNotReferenceTheSandboxOrTheLab()
    {
        AssertNoDependency(Daemon, ["ProxyPlanes.Sandbox", "ProxyPlanes.Lab", "ProxyPlanes.Bench", "ProxyPlanes.Demo", "ProxyPlanes.VmLane"]);
        AssertNoAssemblyReachable(Daemon, ["ProxyPlanes.Sandbox", "ProxyPlanes.Lab", "ProxyPlanes.VmLane", "proxyplanes-bench-worker"]);
    }

    [Fact]
    public void Sources_FeedTheModelOnly_NotTheLoopOrADataPlane()
    {
        string[] forbidden = ["ProxyPlanes.Core", "ProxyPlanes.Backends", "ProxyPlanes.Web", "ProxyPlanes.DataPlane", "Microsoft.AspNetCore"];
        AssertNoDependency(Sources, forbidden);
        AssertNoAssemblyReachable(Sources, forbidden);
    }

    /// <summary>Positive controls: the same checks see dependencies that do exist, so a pass above means something.</summary>
    [Fact]
    public void Checks_SeeDependenciesThatExist()
    {
        Assert.False(Types.InAssembly(DataPlanes["ProxyPlanes.Backends.Ipvs"]).ShouldNot().HaveDependencyOn("ProxyPlanes.Iptables").GetResult().IsSuccessful);
        Assert.False(Types.InAssembly(Core).ShouldNot().HaveDependencyOn("ProxyPlanes.Model").GetResult().IsSuccessful);
        Assert.False(Types.InAssembly(Web).ShouldNot().HaveDependencyOn("Microsoft.AspNetCore").GetResult().IsSuccessful);
        Assert.Contains("ProxyPlanes.Iptables", Reachable(DataPlanes["ProxyPlanes.Backends.Ipvs"]));
        Assert.Contains("ProxyPlanes.Model", Reachable(Core));
        Assert.Contains(Reachable(Web), name => name.StartsWith("Microsoft.AspNetCore", StringComparison.Ordinal));
    }

    private static void AssertNoDependency(Assembly assembly, IEnumerable<string> forbidden)
    {
        var result = Types.InAssembly(assembly).ShouldNot().HaveDependencyOnAny([.. forbidden]).GetResult();
        Assert.True(result.IsSuccessful, $"{assembly.GetName().Name}: {string.Join(", ", result.FailingTypeNames ?? [])} depend on one of {string.Join(", ", forbidden)}");
    }

    private static void AssertNoAssemblyReachable(Assembly assembly, IEnumerable<string> forbidden)
    {
        var reachable = Reachable(assembly);
        var bad = reachable.Where(name => forbidden.Any(f => name == f || name.StartsWith(f + ".", StringComparison.Ordinal))).ToArray();
        Assert.True(bad.Length == 0, $"{assembly.GetName().Name} reaches {string.Join(", ", bad)}");
    }

    /// <summary>Every assembly reachable through references (names), the framework's own left out.</summary>
    private static HashSet<string> Reachable(Assembly root)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var queue = new Queue<AssemblyName>(root.GetReferencedAssemblies());
        while (queue.Count > 0)
        {
            var name = queue.Dequeue();
            if (name.Name is null || name.Name.StartsWith("System", StringComparison.Ordinal) || name.Name is "netstandard" or "mscorlib") continue;
            if (!seen.Add(name.Name)) continue;
            Assembly loaded;
            try
            {
                loaded = Assembly.Load(name);
            }
            catch (FileNotFoundException)
            {
                continue; // a framework facade this host does not ship: not ours
            }
            foreach (var next in loaded.GetReferencedAssemblies()) queue.Enqueue(next);
        }
        return seen;
    }
}
