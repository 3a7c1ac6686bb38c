using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// A sandbox (client, node, pods with HTTP servers) plus the real proxyplanes binary running in
/// the node namespace on a manifest folder the test edits. Everything is removed on dispose,
/// also when the test failed half-way.
/// </summary>
public sealed class ProxyScenario : IAsyncDisposable
{
    public const string NodeName = "node-a";
    private bool _disposed;

    private ProxyScenario(ClusterSandbox sandbox, DirectoryInfo manifests)
    {
        Sandbox = sandbox;
        Manifests = manifests;
    }

    public ClusterSandbox Sandbox { get; }
    public DirectoryInfo Manifests { get; }
    public ProxyProcess? Proxy { get; private set; }

    public static async Task<ProxyScenario> CreateAsync(int pods = 3)
    {
        var manifests = Directory.CreateTempSubdirectory("proxyplanes-test-");
        ClusterSandbox? sandbox = null;
        try
        {
            sandbox = await ClusterSandbox.CreateAsync();
            for (var i = 0; i < pods; i++) await sandbox.AddPodAsync($"pod-{i}", [8080]);
            return new ProxyScenario(sandbox, manifests);
        }
        catch
        {
            if (sandbox is not null) await sandbox.DisposeAsync();
            manifests.Delete(recursive: true);
            throw;
        }
    }

    /// <summary>Pod i's address (pods are created in order: 10.244.1.2, .3, ...).</summary>
    public string PodIp(int index) => Sandbox.Pods[$"pod-{index}"].IP;

    public void WriteManifest(string fileName, string yaml)
    {
        // Write then rename, as editors and kubectl-like tools do, so the watcher never reads half a file.
        var path = Path.Combine(Manifests.FullName, fileName);
        File.WriteAllText(path + ".tmp", yaml);
        File.Move(path + ".tmp", path, overwrite: true);
    }

    /// <summary>Starts the proxy and waits until it is healthy (first sync done).</summary>
    public async Task<ProxyProcess> StartProxyAsync(IEnumerable<string>? extraArgs = null, IDictionary<string, string>? environment = null, string mode = "iptables")
    {
        string[] args =
        [
            "run", $"--mode={mode}", $"--manifests={Manifests.FullName}", $"--hostname-override={NodeName}",
            $"--cluster-cidr={Sandbox.ClusterCidr}", "--min-sync-period=50ms", "--v=4",
            .. extraArgs ?? [],
        ];
        Proxy = ProxyProcess.Start(Sandbox.Node, args, environment);
        await Proxy.WaitHealthyAsync(TimeSpan.FromSeconds(60));
        return Proxy;
    }

    /// <summary>Writes a manifest that changes something and waits until that change is in the kernel.</summary>
    public async Task WriteManifestAndSyncAsync(string fileName, string yaml)
    {
        var before = await Proxy!.ChangesSeenAsync();
        WriteManifest(fileName, yaml);
        await Proxy.WaitForChangesSyncedAsync(before, TimeSpan.FromSeconds(20));
    }

    /// <summary>Sends <paramref name="count"/> requests and counts who answered (pod name, or the failure outcome).</summary>
    public static async Task<Dictionary<string, int>> SpreadAsync(NetworkNamespace from, string ip, int port, int count = 40)
    {
        var answers = new Dictionary<string, int>();
        for (var i = 0; i < count; i++)
        {
            var result = await from.HttpGetAsync(ip, port, "/cgi-bin/who", TimeSpan.FromSeconds(3));
            var key = result.IsAnswered ? Who(result.Body).Pod : result.Outcome.ToString();
            answers[key] = answers.GetValueOrDefault(key) + 1;
        }
        return answers;
    }

    /// <summary>Parses the pods' answer "pod=NAME src=ADDRESS".</summary>
    public static (string Pod, string Source) Who(string body)
    {
        string Field(string name) => body.Split(' ', '\n').First(w => w.StartsWith(name + "=", StringComparison.Ordinal))[(name.Length + 1)..].Trim();
        return (Field("pod"), Field("src"));
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed) return;
        _disposed = true;
        try
        {
            if (Proxy is not null) await Proxy.DisposeAsync();
        }
        finally
        {
            await Sandbox.DisposeAsync();
            Manifests.Delete(recursive: true);
        }
    }

    public static string Service(string name, string clusterIP, int port = 80, string type = "ClusterIP", int nodePort = 0, string extraSpec = "") => $"""
        apiVersion: v1
        kind: Service
        metadata: {"{"} name: {name}, namespace: test {"}"}
        spec:
          type: {type}
          clusterIP: {clusterIP}
        {extraSpec}
          ports:
            - name: http
              port: {port}
              targetPort: http
        {(nodePort != 0 ? $"      nodePort: {nodePort}" : "")}
        """;

    public static string Slice(string service, params string[] addresses) =>
        $"""
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {"{"} name: {service}-1, namespace: test, labels: {"{"} kubernetes.io/service-name: {service} {"}"} {"}"}
        addressType: IPv4
        ports: [ {"{"} name: http, protocol: TCP, port: 8080 {"}"} ]
        endpoints:
        """ + "\n" + string.Concat(addresses.Select(a => $"  - {{ addresses: [\"{a}\"], conditions: {{ ready: true }}, nodeName: {NodeName} }}\n"));
}
