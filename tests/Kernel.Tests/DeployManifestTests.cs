using System.CommandLine;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using ProxyPlanes.Config;
using ProxyPlanes.Demo;
using ProxyPlanes.TestKit;
using YamlDotNet.RepresentationModel;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// deploy/: the manifests and the Dockerfile, checked without a cluster or a Docker engine: the
/// kinds are there, RBAC is exactly what the proxy reads, the DaemonSet runs flags the daemon has
/// with a config the --config parser accepts, the image has the tools the proxy runs.
/// </summary>
public sealed partial class DeployManifestTests
{
    private static readonly string Deploy = Path.Combine(RepoPaths.Root, "deploy");

    private static List<YamlMappingNode> Documents(string file)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(File.ReadAllText(Path.Combine(Deploy, file))));
        return stream.Documents.Select(d => (YamlMappingNode)d.RootNode).ToList();
    }

    private static YamlMappingNode Single(string file, string kind) =>
        Assert.Single(Documents(file), d => Text(d, "kind") == kind);

    private static YamlNode? At(YamlNode node, params string[] path)
    {
        foreach (var key in path)
        {
            if (node is not YamlMappingNode map || !map.Children.TryGetValue(new YamlScalarNode(key), out var next)) return null;
            node = next;
        }
        return node;
    }

    private static string? Text(YamlNode node, params string[] path) => (At(node, path) as YamlScalarNode)?.Value;

    private static IEnumerable<YamlNode> Items(YamlNode node, params string[] path) =>
        At(node, path) is YamlSequenceNode seq ? seq.Children : [];

    private static List<string> Strings(YamlNode node, params string[] path) => Items(node, path).Select(i => ((YamlScalarNode)i).Value!).ToList();

    private static YamlMappingNode Container() =>
        (YamlMappingNode)Assert.Single(Items(Single("daemonset.yaml", "DaemonSet"), "spec", "template", "spec", "containers"));

    [Fact]
    public void EveryKindIsThere_InKubeSystem()
    {
        var kinds = new[] { "daemonset.yaml", "rbac.yaml", "configmap.yaml" }
            .SelectMany(Documents)
            .Select(d => (Kind: Text(d, "kind"), Namespace: Text(d, "metadata", "namespace"), Name: Text(d, "metadata", "name")))
            .ToList();

        Assert.Equal(["ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "ServiceAccount"], kinds.Select(k => k.Kind!).Order());
        Assert.All(kinds.Where(k => k.Kind is not ("ClusterRole" or "ClusterRoleBinding")), k => Assert.Equal("kube-system", k.Namespace));
        Assert.All(kinds, k => Assert.Equal("proxyplanes", k.Name));
    }

    [Fact]
    public void ClusterRole_GrantsExactlyWhatTheProxyReads()
    {
        var role = Single("rbac.yaml", "ClusterRole");
        var grants = new HashSet<string>();
        foreach (var rule in Items(role, "rules"))
        {
            Assert.Null(At(rule, "nonResourceURLs"));
            Assert.Null(At(rule, "resourceNames"));
            foreach (var group in Strings(rule, "apiGroups"))
                foreach (var resource in Strings(rule, "resources"))
                    foreach (var verb in Strings(rule, "verbs"))
                    {
                        Assert.DoesNotContain("*", new[] { group, resource, verb });
                        Assert.True(grants.Add($"{group}/{resource}:{verb}"), $"{group}/{resource}:{verb} is granted twice");
                    }
        }

        string[] expected =
        [
            "/services:list", "/services:watch",
            "discovery.k8s.io/endpointslices:list", "discovery.k8s.io/endpointslices:watch",
            "/nodes:get", "/nodes:list", "/nodes:watch",
            "/events:create", "/events:patch", "events.k8s.io/events:create", "events.k8s.io/events:patch",
        ];
        Assert.Equal(expected.Order(), grants.Order());
    }

    [Fact]
    public void Binding_GivesTheRoleToTheDaemonSetsServiceAccount()
    {
        var binding = Single("rbac.yaml", "ClusterRoleBinding");
        var account = Single("rbac.yaml", "ServiceAccount");
        var pod = At(Single("daemonset.yaml", "DaemonSet"), "spec", "template", "spec")!;

        Assert.Equal("ClusterRole", Text(binding, "roleRef", "kind"));
        Assert.Equal(Text(Single("rbac.yaml", "ClusterRole"), "metadata", "name"), Text(binding, "roleRef", "name"));
        var subject = Assert.Single(Items(binding, "subjects"));
        Assert.Equal("ServiceAccount", Text(subject, "kind"));
        Assert.Equal(Text(account, "metadata", "name"), Text(subject, "name"));
        Assert.Equal(Text(account, "metadata", "namespace"), Text(subject, "namespace"));
        Assert.Equal(Text(account, "metadata", "name"), Text(pod, "serviceAccountName"));
    }

    [Fact]
    public void DaemonSet_RunsOnEveryNode_OnTheHostNetwork_WithOnlyNetAdminAndNetRaw()
    {
        var pod = At(Single("daemonset.yaml", "DaemonSet"), "spec", "template", "spec")!;
        Assert.Equal("true", Text(pod, "hostNetwork"));
        Assert.Equal("system-node-critical", Text(pod, "priorityClassName"));
        var toleration = Assert.Single(Items(pod, "tolerations"));
        Assert.Equal("Exists", Text(toleration, "operator"));
        Assert.Null(At(toleration, "key"));

        var security = At(Container(), "securityContext")!;
        Assert.NotEqual("true", Text(security, "privileged"));
        Assert.Equal(["NET_ADMIN", "NET_RAW"], Strings(security, "capabilities", "add").Order());
        Assert.Equal(["ALL"], Strings(security, "capabilities", "drop"));
    }

    [Fact]
    public void DaemonSet_MountsTheLockModulesAndConfig()
    {
        var pod = At(Single("daemonset.yaml", "DaemonSet"), "spec", "template", "spec")!;
        var volumes = Items(pod, "volumes").ToDictionary(v => Text(v, "name")!);
        var mounts = Items(Container(), "volumeMounts").ToDictionary(m => Text(m, "mountPath")!);

        var lockMount = mounts["/run/xtables.lock"];
        Assert.Equal("/run/xtables.lock", Text(volumes[Text(lockMount, "name")!], "hostPath", "path"));
        Assert.Equal("FileOrCreate", Text(volumes[Text(lockMount, "name")!], "hostPath", "type"));
        Assert.NotEqual("true", Text(lockMount, "readOnly"));

        var modules = mounts["/lib/modules"];
        Assert.Equal("true", Text(modules, "readOnly"));
        Assert.Equal("/lib/modules", Text(volumes[Text(modules, "name")!], "hostPath", "path"));

        var config = mounts["/var/lib/kube-proxy"];
        Assert.Equal(Text(Single("configmap.yaml", "ConfigMap"), "metadata", "name"), Text(volumes[Text(config, "name")!], "configMap", "name"));
    }

    [Fact]
    public void DaemonSet_ProbesTheHealthServer()
    {
        var container = Container();
        Assert.Equal("/livez", Text(container, "livenessProbe", "httpGet", "path"));
        Assert.Equal("10256", Text(container, "livenessProbe", "httpGet", "port"));
        Assert.Equal("/healthz", Text(container, "readinessProbe", "httpGet", "path"));
        Assert.Equal("10256", Text(container, "readinessProbe", "httpGet", "port"));
        // ...where the config puts the health server.
        var config = KubeProxyConfigFile.Parse(ConfigMapConfig(), "configmap.yaml:config.conf");
        Assert.Equal(10256, config.HealthzBindAddress!.Value.Port);
    }

    [Fact]
    public void DaemonSetArgs_AreFlagsTheDaemonHas_AndBindWithTheMountedConfig()
    {
        var container = Container();
        var args = Strings(container, "args");
        Assert.Equal("run", args[0]);
        var env = Items(container, "env").Single(e => Text(e, "name") == "NODE_NAME");
        Assert.Equal("spec.nodeName", Text(env, "valueFrom", "fieldRef", "fieldPath"));

        var flags = new ProxyFlags();
        var run = new Command("run");
        flags.AddTo(run);
        var known = run.Options.SelectMany(o => o.Aliases.Append(o.Name)).ToHashSet();
        foreach (var arg in args.Skip(1))
        {
            Assert.StartsWith("--", arg);
            Assert.Contains(arg.Split('=')[0], known);
        }
        // The mode comes from the config file, not a flag.
        Assert.DoesNotContain(args, a => a.StartsWith("--mode", StringComparison.Ordinal));

        // --config names the ConfigMap's key under the mount.
        var configArg = Assert.Single(args, a => a.StartsWith("--config=", StringComparison.Ordinal))["--config=".Length..];
        Assert.Single(Items(container, "volumeMounts"), m => configArg == Text(m, "mountPath") + "/" + Path.GetFileName(configArg));
        var key = Path.GetFileName(configArg);
        Assert.NotNull(At(Single("configmap.yaml", "ConfigMap"), "data", key));

        // Bind them as the daemon does, with the ConfigMap's file where the mount puts it and the
        // downward API's node name substituted (--manifests until the API source exists).
        var folder = Directory.CreateTempSubdirectory("proxyplanes-deploy-");
        try
        {
            var configPath = Path.Combine(folder.FullName, key);
            File.WriteAllText(configPath, ConfigMapConfig());
            var real = args.Skip(1)
                .Select(a => a.Replace("$(NODE_NAME)", "worker-7", StringComparison.Ordinal))
                .Select(a => a == $"--config={configArg}" ? $"--config={configPath}" : a)
                .Append("--manifests=/")
                .ToArray();
            var result = run.Parse(real);
            Assert.Empty(result.Errors);
            var settings = flags.Bind(result);

            Assert.Equal("iptables", settings.Mode);
            Assert.Equal("worker-7", settings.Proxy.HostName);
            Assert.Equal(configPath, settings.ConfigFile);
            Assert.Empty(settings.IgnoredConfigFields);
            Assert.NotEmpty(settings.Proxy.ClusterCidrs);
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    [Fact]
    public void ConfigMap_UsesOnlyFieldsWeSupport()
    {
        var config = KubeProxyConfigFile.Parse(ConfigMapConfig(), "configmap.yaml:config.conf");

        Assert.Equal("iptables", config.Mode!.Value);
        Assert.Empty(config.IgnoredFields);
    }

    [Fact]
    public void Dockerfile_BuildsNativeInTheSdk_RunsOnRuntimeDeps_WithTheFourTools()
    {
        // Continuation lines joined, comments dropped.
        var text = File.ReadAllText(Path.Combine(Deploy, "Dockerfile")).Replace("\\\n", " ", StringComparison.Ordinal);
        var lines = text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();

        var stages = lines.Where(l => l.StartsWith("FROM ", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, stages.Count);
        Assert.Matches(@"^FROM mcr\.microsoft\.com/dotnet/sdk:10\.0 AS build$", stages[0]);
        // A native AOT executable needs no .NET runtime in the image (src/ProxyPlanes publishes with PublishAot).
        Assert.Matches(@"^FROM mcr\.microsoft\.com/dotnet/runtime-deps:10\.0( AS \w+)?$", stages[1]);
        Assert.Contains("<PublishAot>true</PublishAot>", File.ReadAllText(Path.Combine(RepoPaths.Root, "src", "ProxyPlanes", "ProxyPlanes.csproj")));
        var runtimeStart = lines.IndexOf(stages[1]);
        var build = lines[..runtimeStart];
        var runtime = lines[runtimeStart..];

        Assert.Contains(build, l => Regex.IsMatch(l, @"^RUN dotnet publish src/ProxyPlanes -c Release -o /app$"));
        // The native link needs clang and zlib in the SDK stage, installed before the publish.
        var linker = build.FindIndex(l => l.Contains("apt-get install", StringComparison.Ordinal));
        Assert.True(linker >= 0, "the build stage installs no linker");
        Assert.Superset(new HashSet<string> { "clang", "zlib1g-dev" }, AptInstall().Match(build[linker]).Groups["packages"].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet());
        Assert.True(linker < build.FindIndex(l => l.StartsWith("RUN dotnet publish", StringComparison.Ordinal)));
        Assert.True(File.Exists(Path.Combine(RepoPaths.Root, "src", "ProxyPlanes", "ProxyPlanes.csproj")));
        Assert.Contains(runtime, l => l.StartsWith("COPY --from=build /app/proxyplanes ", StringComparison.Ordinal));

        var install = Assert.Single(runtime, l => l.Contains("apt-get install", StringComparison.Ordinal));
        var packages = AptInstall().Match(install).Groups["packages"].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.Superset(new HashSet<string> { "iptables", "nftables", "ipset", "conntrack" }, packages.ToHashSet());
        Assert.Contains("apt-get update", install);

        var entrypoint = Assert.Single(runtime, l => l.StartsWith("ENTRYPOINT", StringComparison.Ordinal));
        Assert.Contains("proxyplanes", entrypoint);
    }

    [Fact]
    public void Image_ShipsTheDaemonOnly_NoLabSandboxOrExamples()
    {
        // The image is `dotnet publish src/ProxyPlanes` (checked above): what the daemon project brings is what ships.
        var daemon = XDocument.Load(Path.Combine(RepoPaths.Root, "src", "ProxyPlanes", "ProxyPlanes.csproj"));
        var references = daemon.Descendants("ProjectReference").Select(r => r.Attribute("Include")!.Value).ToList();
        Assert.Contains(references, r => r.Contains("Backends.Iptables", StringComparison.Ordinal)); // a positive control
        Assert.DoesNotContain(references, r => r.Contains("Sandbox", StringComparison.Ordinal) || r.Contains("Lab", StringComparison.Ordinal));
        Assert.DoesNotContain(daemon.Descendants(), e => e.Attribute("Include")?.Value.Contains("examples", StringComparison.Ordinal) == true);
        Assert.DoesNotContain(typeof(Modes).Assembly.GetReferencedAssemblies(), a => a.Name == "ProxyPlanes.Sandbox");
        Assert.Contains(typeof(DemoCommand).Assembly.GetReferencedAssemblies(), a => a.Name == "ProxyPlanes.Sandbox");

        // Nor does the build context carry what the daemon does not build from.
        var ignored = File.ReadAllLines(Path.Combine(Deploy, "Dockerfile.dockerignore")).Select(l => l.Trim()).ToHashSet();
        Assert.Superset(new HashSet<string> { "examples/", "src/Lab/", "src/Sandbox/", "tests/" }, ignored);
    }

    /// <summary>config.conf of deploy/configmap.yaml.</summary>
    private static string ConfigMapConfig() => Text(Single("configmap.yaml", "ConfigMap"), "data", "config.conf")!;

    [GeneratedRegex(@"apt-get install (?:-\S+ )*(?<packages>[a-z0-9 .+-]+?)\s*(?:&&|$)")]
    private static partial Regex AptInstall();
}
