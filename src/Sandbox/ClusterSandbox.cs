using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace ProxyPlanes.Sandbox;

/// <summary>
/// A one-node "cluster" made of network namespaces, for demos, kernel tests and benchmarks. See README.md for the
/// addressing plan. Every name starts with a random run prefix (<c>pp</c> + 5 hex digits), so concurrent sandboxes
/// never collide. Requires root.
/// </summary>
public sealed partial class ClusterSandbox : IAsyncDisposable
{
    /// <summary>Most pods one node can hold: 10.244.1.2 .. 10.244.1.254.</summary>
    public const int MaxPods = 253;

    /// <summary>Most external clients: 203.0.113.10 .. 203.0.113.254.</summary>
    public const int MaxExternalClients = 245;

    private const string NodeSideGateway = "10.244.1.1";
    private const string NodeSideGatewayV6 = "fd00:10:244:1::1";

    /// <summary>
    /// Set in every namespace before its veths exist. No duplicate address detection: link-local addresses are usable
    /// at once, so IPv6 neighbour discovery works immediately instead of after ~2 s of DAD. No ICMP rate limiting: the
    /// default (1/s per destination after a burst of 6) turns rapid probes of closed ports or REJECTing services from
    /// Refused into TimedOut. For IPv4 that is done with an empty ratemask rather than icmp_ratelimit=0: the latter
    /// zeroes the per-peer token bucket that ip_error() shares, which throttles errors from unreachable routes to 1/s.
    /// </summary>
    private static readonly string[] CommonSysctls =
    [
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
        "net.ipv4.icmp_ratemask=0",
        "net.ipv6.icmp.ratelimit=0",
    ];

    /// <summary>
    /// Sysctls of a namespace that routes (the node, a remote node): forwarding on, no reverse-path
    /// filter. Redirects off: traffic a router sends back out the interface it came in on (e.g. to
    /// unassigned pod IPs, via the default route) would trigger ICMP redirects, whose bookkeeping
    /// also starves the per-peer budget for ICMP unreachable errors.
    /// </summary>
    private static readonly string[] RouterSysctls =
    [
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.default.send_redirects=0",
        .. CommonSysctls,
    ];

    private static readonly TimeSpan DisposeWaitForMutation = TimeSpan.FromSeconds(10);

    private readonly ClusterSandboxOptions _options;
    private readonly SemaphoreSlim _mutation = new(1, 1);
    private readonly Lock _gate = new();
    private readonly Lock _tearDownGate = new();
    private readonly List<Resource> _resources = [];
    private readonly Dictionary<string, SandboxPod> _pods = new(StringComparer.Ordinal);
    private readonly List<ExternalClient> _clients = [];
    private readonly List<RemoteNode> _remoteNodes = [];
    private readonly List<IDisposable> _signalRegistrations = [];
    private NetworkNamespace? _node;
    private int _nextPodIndex;
    private int _nextClientIndex;
    private int _nextRemoteNodeIndex;
    private bool _tornDown;

    private ClusterSandbox(ClusterSandboxOptions options, string prefix)
    {
        _options = options;
        Prefix = prefix;
    }

    /// <summary>Run prefix, e.g. <c>pp1a2b3</c>; every namespace is called <c>{Prefix}-something</c>.</summary>
    public string Prefix { get; }

    /// <summary>Where the proxy runs: routes between clients and pods, ip_forward on.</summary>
    public NetworkNamespace Node => _node ?? throw new InvalidOperationException("The sandbox was not created.");

    /// <summary>The first off-cluster client.</summary>
    public NetworkNamespace Client => PrimaryClient.Namespace;

    public ExternalClient PrimaryClient
    {
        get
        {
            lock (_gate)
            {
                return _clients.Count > 0 ? _clients[0] : throw new InvalidOperationException("The sandbox was not created.");
            }
        }
    }

    /// <summary>All external clients, the primary one first.</summary>
    public IReadOnlyList<ExternalClient> ExternalClients
    {
        get
        {
            lock (_gate)
            {
                return _clients.ToArray();
            }
        }
    }

    /// <summary>Pods by name, on this node and on remote nodes (see <see cref="SandboxPod.NodeName"/>).</summary>
    public IReadOnlyDictionary<string, SandboxPod> Pods
    {
        get
        {
            lock (_gate)
            {
                return new Dictionary<string, SandboxPod>(_pods, StringComparer.Ordinal);
            }
        }
    }

    /// <summary>
    /// The Kubernetes name of the node the proxy runs on (<see cref="ClusterSandboxOptions.NodeName"/>, default
    /// <c>node-a</c>); <see cref="SandboxPod.NodeName"/> of its pods, for EndpointSlices.
    /// </summary>
    public string NodeName => _options.NodeName;

    /// <summary>The node's address on the external network (what NodePorts are reached on).</summary>
    public string NodeIp => "203.0.113.1";

    public string NodeIpv6 => "2001:db8::1";

    public string ClientIp => "203.0.113.10";

    public string ClientIpv6 => "2001:db8::10";

    public string ExternalCidr => "203.0.113.0/24";

    public string ExternalCidrV6 => "2001:db8::/64";

    public string ClusterCidr => "10.244.0.0/16";

    public string ClusterCidrV6 => "fd00:10:244::/48";

    /// <summary>This node's pod CIDR.</summary>
    public string PodCidr => "10.244.1.0/24";

    public string PodCidrV6 => "fd00:10:244:1::/64";

    /// <summary>Conventional service CIDR (nothing routes it specially: the proxy DNATs it).</summary>
    public string ServiceCidr => "10.96.0.0/12";

    public string ServiceCidrV6 => "fd00:10:96::/112";

    /// <summary>The node's address as pods see it (the gateway on every pod veth).</summary>
    public string NodePodGatewayIp => NodeSideGateway;

    public string NodePodGatewayIpv6 => NodeSideGatewayV6;

    /// <summary>
    /// Creates the node and the primary client. On failure everything created so far is removed before the
    /// exception propagates.
    /// </summary>
    public static async Task<ClusterSandbox> CreateAsync(ClusterSandboxOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new ClusterSandboxOptions();
        ArgumentException.ThrowIfNullOrWhiteSpace(options.NodeName, nameof(options));
        var sandbox = new ClusterSandbox(options, NewPrefix());
        try
        {
            if (sandbox._options.CleanupOnExitSignals)
            {
                sandbox.RegisterExitCleanup();
            }

            var node = await sandbox.CreateNamespaceAsync("node", owner: "node", cancellationToken).ConfigureAwait(false);
            sandbox._node = node;
            await node.CheckedExecAsync(["sysctl", "-qw", .. RouterSysctls], timeout: null, cancellationToken).ConfigureAwait(false);

            var client = await sandbox.AddExternalClientCoreAsync("client", $"{sandbox.Prefix}-client", cancellationToken).ConfigureAwait(false);

            // The node's own connections to service VIPs must be routable before OUTPUT DNAT rewrites them; a default
            // route towards the client does that. Un-NATed VIP traffic then dies at the client (forwarding off there).
            await node.IpBatchAsync(
                [
                    $"route add default via {client.IP} dev {client.HostInterface}",
                    $"route add default via {client.IPv6} dev {client.HostInterface}",
                ],
                cancellationToken).ConfigureAwait(false);
            return sandbox;
        }
        catch (Exception creationError)
        {
            try
            {
                await sandbox.DisposeAsync().ConfigureAwait(false);
            }
            catch (SandboxException cleanupError)
            {
                throw new SandboxException($"{creationError.Message} (cleanup after the failure was incomplete too: {cleanupError.Message})", new AggregateException(creationError, cleanupError));
            }

            throw;
        }
    }

    /// <inheritdoc cref="AddPodAsync(string, int[], CancellationToken)"/>
    public Task<SandboxPod> AddPodAsync(string name, params int[] ports) => AddPodAsync(name, ports, CancellationToken.None);

    /// <summary>
    /// Adds a pod on this node: namespace <c>{Prefix}-pod-{name}</c>, veth <c>vpodN</c> (node) / <c>eth0</c> (pod),
    /// addresses 10.244.1.(N+2)/32 and fd00:10:244:1::(N+2)/128, and a busybox httpd per port (default 8080) serving
    /// <c>/cgi-bin/who</c>. Returns once every server accepts connections. If anything fails, what was created for
    /// this pod is removed again and the exception propagates.
    /// </summary>
    public Task<SandboxPod> AddPodAsync(string name, int[] ports, CancellationToken cancellationToken) =>
        AddPodCoreAsync(name, ports, remoteNode: null, cancellationToken);

    /// <summary>
    /// Adds a pod on <paramref name="node"/> (see <see cref="AddRemoteNodeAsync"/>): like
    /// <see cref="AddPodAsync(string, int[], CancellationToken)"/>, but wired to the remote node (veth <c>vpodN</c> in
    /// the remote node's namespace, gateway 10.244.2.1) and addressed from its pod CIDR: 10.244.2.(N+2)/32 and
    /// fd00:10:244:2::(N+2)/128 for the first remote node. Pod names are unique across the whole sandbox.
    /// </summary>
    public Task<SandboxPod> AddPodAsync(string name, int[] ports, RemoteNode node, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(node);
        return AddPodCoreAsync(name, ports, node, cancellationToken);
    }

    /// <summary>
    /// Deletes a pod: its node-side veth (and with it the node's routes to the pod), its servers, its namespace and its
    /// files. Its addresses are not handed out again.
    /// </summary>
    public async Task RemovePodAsync(string name, CancellationToken cancellationToken = default)
    {
        await _mutation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ThrowIfTornDown();
            lock (_gate)
            {
                if (!_pods.Remove(name))
                {
                    throw new KeyNotFoundException($"No pod named '{name}'.");
                }
            }

            await Task.Run(() => ReleaseOwner($"pod/{name}", throwOnError: true), CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            _mutation.Release();
        }
    }

    /// <summary>
    /// Adds another off-cluster client, namespace <c>{Prefix}-ext-{name}</c>, at the next external address
    /// (203.0.113.11, 2001:db8::11, ...).
    /// </summary>
    public async Task<ExternalClient> AddExternalClientAsync(string name, CancellationToken cancellationToken = default)
    {
        ValidateMemberName(name);
        await _mutation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ThrowIfTornDown();
            lock (_gate)
            {
                if (_clients.Any(c => c.Name == name))
                {
                    throw new ArgumentException($"External client '{name}' already exists.", nameof(name));
                }
            }

            return await AddExternalClientCoreAsync(name, $"{Prefix}-ext-{name}", cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _mutation.Release();
        }
    }

    /// <summary>
    /// Deletes the leftovers of a sandbox run that could not clean up (crash, kill -9): kills the processes still
    /// running in namespaces named <c>{prefix}-*</c>, deletes those namespaces and the run's temp directories.
    /// <paramref name="prefix"/> must be a whole run prefix (<c>pp</c> + 5 lowercase hex digits), never a partial one.
    /// </summary>
    public static Task SweepAsync(string prefix) => Task.Run(() => Sweep(prefix));

    /// <summary>
    /// Kills every process the sandbox started (by PID), deletes every namespace it created and its temp
    /// directories. Safe to call after a failed or partial creation, and more than once.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        var acquired = await _mutation.WaitAsync(DisposeWaitForMutation).ConfigureAwait(false);
        try
        {
            await Task.Run(() => TearDown(throwOnError: true)).ConfigureAwait(false);
        }
        finally
        {
            if (acquired)
            {
                _mutation.Release();
            }
        }
    }

    public override string ToString() => $"ClusterSandbox {Prefix}";

    internal static bool IsRunPrefix(string prefix) => prefix is not null && RunPrefixPattern().IsMatch(prefix);

    private static string NewPrefix()
    {
        for (var attempt = 0; attempt < 16; attempt++)
        {
            var prefix = "pp" + RandomNumberGenerator.GetHexString(5, lowercase: true);
            if (!NetworkNamespace.ListNames().Any(n => n.StartsWith(prefix + "-", StringComparison.Ordinal)))
            {
                return prefix;
            }
        }

        throw new SandboxException("Could not find an unused run prefix.");
    }

    private static void Sweep(string prefix)
    {
        if (!IsRunPrefix(prefix))
        {
            throw new ArgumentException($"'{prefix}' is not a sandbox run prefix (expected 'pp' followed by 5 lowercase hex digits).", nameof(prefix));
        }

        var errors = new List<Exception>();
        foreach (var name in NetworkNamespace.ListNames().Where(n => n.StartsWith(prefix + "-", StringComparison.Ordinal)))
        {
            try
            {
                var pids = NetworkNamespace.Ip(["netns", "pids", name]);
                foreach (var line in pids.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                {
                    if (int.TryParse(line, out var pid) && pid > 1 && pid != Environment.ProcessId)
                    {
                        Interop.Kill(pid, Interop.SIGKILL);
                    }
                }

                DeleteNamespaceByName(name);
            }
            catch (Exception e) when (e is SandboxException or TimeoutException)
            {
                errors.Add(e);
            }
        }

        foreach (var dir in RunTempDirectories(prefix))
        {
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                errors.Add(e);
            }
        }

        if (errors.Count > 0)
        {
            throw new SandboxException($"Sweeping sandbox run {prefix} was incomplete: {errors[0].Message}", new AggregateException(errors));
        }
    }

    private static IEnumerable<string> RunTempDirectories(string prefix)
    {
        try
        {
            return Directory.EnumerateDirectories(Path.GetTempPath(), prefix + "-*").ToArray();
        }
        catch (DirectoryNotFoundException)
        {
            return [];
        }
    }

    private static void DeleteNamespaceByName(string name)
    {
        if (!NetworkNamespace.Exists(name))
        {
            return;
        }

        var result = NetworkNamespace.Ip(["netns", "del", name]);
        if (!result.Succeeded && NetworkNamespace.Exists(name))
        {
            throw new SandboxCommandException($"ip netns del {name}", result);
        }
    }

    private static void ValidateMemberName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!MemberNamePattern().IsMatch(name))
        {
            throw new ArgumentException($"Invalid name '{name}': use a DNS label of at most 40 characters ([a-z0-9] and '-', starting and ending alphanumeric).", nameof(name));
        }
    }

    private async Task<SandboxPod> AddPodCoreAsync(string name, int[] ports, RemoteNode? remoteNode, CancellationToken cancellationToken)
    {
        ValidateMemberName(name);
        ArgumentNullException.ThrowIfNull(ports);
        var podPorts = ports.Length == 0 ? [8080] : ports.ToArray();
        foreach (var port in podPorts)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(port, 1, nameof(ports));
            ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535, nameof(ports));
        }

        if (podPorts.Distinct().Count() != podPorts.Length)
        {
            throw new ArgumentException("Pod ports must be distinct.", nameof(ports));
        }

        await _mutation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ThrowIfTornDown();
            lock (_gate)
            {
                if (_pods.ContainsKey(name))
                {
                    throw new ArgumentException($"Pod '{name}' already exists.", nameof(name));
                }

                if (remoteNode is not null && !_remoteNodes.Contains(remoteNode))
                {
                    throw new ArgumentException($"Remote node '{remoteNode.Name}' does not belong to sandbox {Prefix}.", nameof(remoteNode));
                }
            }

            var index = remoteNode?.NextPodIndex ?? _nextPodIndex;
            if (index >= MaxPods)
            {
                throw new InvalidOperationException($"Node {remoteNode?.Name ?? NodeName} has no pod addresses left (at most {MaxPods} pods per node).");
            }

            SetNextPodIndex(remoteNode, index + 1);
            var owner = $"pod/{name}";
            try
            {
                var site = remoteNode is null
                    ? new PodSite(Node, NodeName, NodeSideGateway, NodeSideGatewayV6, "10.244.1.", "fd00:10:244:1::")
                    : new PodSite(remoteNode.Namespace, remoteNode.Name, remoteNode.PodGatewayIp, remoteNode.PodGatewayIpv6, remoteNode.PodAddressPrefix, remoteNode.PodAddressPrefixV6);
                var pod = await CreatePodAsync(name, index, podPorts, owner, site, cancellationToken).ConfigureAwait(false);
                lock (_gate)
                {
                    _pods.Add(name, pod);
                }

                return pod;
            }
            catch
            {
                // The router-side veth is deleted synchronously, so a clean rollback frees the address and interface name.
                if (ReleaseOwner(owner, throwOnError: false))
                {
                    SetNextPodIndex(remoteNode, index);
                }

                throw;
            }
        }
        finally
        {
            _mutation.Release();
        }
    }

    private void SetNextPodIndex(RemoteNode? remoteNode, int next)
    {
        if (remoteNode is null)
        {
            _nextPodIndex = next;
        }
        else
        {
            remoteNode.NextPodIndex = next;
        }
    }

    private async Task<SandboxPod> CreatePodAsync(string name, int index, int[] ports, string owner, PodSite site, CancellationToken cancellationToken)
    {
        var ip = $"{site.AddressPrefix}{index + 2}";
        var ipv6 = $"{site.AddressPrefixV6}{index + 2}";
        var hostInterface = $"vpod{index}";

        var ns = await CreateNamespaceAsync($"pod-{name}", owner, cancellationToken).ConfigureAwait(false);

        // bindv6only: lets one httpd bind 0.0.0.0:PORT and another [::]:PORT, so REMOTE_ADDR is never v4-mapped.
        await ns.CheckedExecAsync(
            [
                "sysctl", "-qw",
                "net.ipv6.bindv6only=1",
                "net.ipv4.ip_forward=0",
                "net.ipv6.conf.all.forwarding=0",
                .. CommonSysctls,
            ],
            timeout: null,
            cancellationToken).ConfigureAwait(false);
        await LinkToNodeAsync(site.Router, ns, owner, hostInterface, site.Gateway, site.GatewayV6, ip, ipv6, cancellationToken).ConfigureAwait(false);

        var directory = CreateContentDirectory(name, owner);

        var servers = new List<SandboxProcess>();
        foreach (var port in ports)
        {
            foreach (var bind in new[] { $"0.0.0.0:{port}", $"[::]:{port}" })
            {
                servers.Add(ns.StartProcess(_options.BusyboxPath, ["httpd", "-f", "-p", bind, "-h", directory]));
            }
        }

        for (var i = 0; i < ports.Length; i++)
        {
            await WaitUntilListeningAsync(ns, name, servers[2 * i], IPAddress.Loopback, ports[i], cancellationToken).ConfigureAwait(false);
            await WaitUntilListeningAsync(ns, name, servers[(2 * i) + 1], IPAddress.IPv6Loopback, ports[i], cancellationToken).ConfigureAwait(false);
        }

        if (_options.UdpResponders)
        {
            foreach (var port in ports)
            {
                var responder = UdpResponder.Start(ns, name, port);
                Track(owner, $"UDP responder {name}:{port}", responder.Dispose);
            }
        }

        return new SandboxPod(name, site.NodeName, ns, ip, ipv6, hostInterface, ports, servers, directory);
    }

    private string CreateContentDirectory(string podName, string owner)
    {
        var directory = Directory.CreateTempSubdirectory($"{Prefix}-{podName}-");
        Track(owner, $"directory {directory.FullName}", () =>
        {
            if (Directory.Exists(directory.FullName))
            {
                Directory.Delete(directory.FullName, recursive: true);
            }
        });

        // The directory is 0700; httpd runs as root, so that is fine.
        var cgiBin = Directory.CreateDirectory(Path.Combine(directory.FullName, "cgi-bin")).FullName;
        var who = Path.Combine(cgiBin, "who");
        File.WriteAllText(
            who,
            "#!/bin/sh\n" +
            "printf 'Content-Type: text/plain\\r\\n\\r\\n'\n" +
            "src=${REMOTE_ADDR#[}\n" +
            $"printf 'pod=%s src=%s' '{podName}' \"${{src%]}}\"\n");
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("The sandbox needs Linux network namespaces.");
        }

        File.SetUnixFileMode(
            who,
            UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
            UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        File.WriteAllText(Path.Combine(directory.FullName, "index.html"), $"pod={podName}\n");
        return directory.FullName;
    }

    private async Task WaitUntilListeningAsync(
        NetworkNamespace ns,
        string podName,
        SandboxProcess server,
        IPAddress loopback,
        int port,
        CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(_options.ServerReadyTimeout);
        while (true)
        {
            if (server.HasExited)
            {
                // Give the stderr reader a moment to deliver the last lines.
                await Task.Delay(50, cancellationToken).ConfigureAwait(false);
                var stderr = string.Join(" | ", server.StandardErrorLines);
                throw new SandboxException(
                    $"HTTP server for pod {podName} on {loopback}:{port} exited with code {server.ExitCode}" +
                    (stderr.Length > 0 ? $": {stderr}" : "."));
            }

            using (var socket = ns.CreateSocket(loopback.AddressFamily, SocketType.Stream, ProtocolType.Tcp))
            {
                try
                {
                    await socket.ConnectAsync(new IPEndPoint(loopback, port), deadline.Token).ConfigureAwait(false);
                    return;
                }
                catch (SocketException)
                {
                    // Not listening yet.
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    // Deadline; reported below.
                }
            }

            try
            {
                await Task.Delay(10, deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException(
                    $"HTTP server for pod {podName} did not accept connections on {loopback}:{port} within {_options.ServerReadyTimeout.TotalSeconds:0.###} s.");
            }
        }
    }

    private async Task<ExternalClient> AddExternalClientCoreAsync(string name, string namespaceName, CancellationToken cancellationToken)
    {
        if (_nextClientIndex >= MaxExternalClients)
        {
            throw new InvalidOperationException($"No external addresses left (at most {MaxExternalClients} clients per sandbox).");
        }

        var index = _nextClientIndex++;
        var ip = $"203.0.113.{index + 10}";
        var ipv6 = $"2001:db8::{index + 10}";
        var hostInterface = $"vext{index}";
        var owner = $"client/{name}";
        try
        {
            var ns = await CreateNamespaceAsync(namespaceName[(Prefix.Length + 1)..], owner, cancellationToken).ConfigureAwait(false);
            await ns.CheckedExecAsync(
                ["sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0", .. CommonSysctls],
                timeout: null,
                cancellationToken).ConfigureAwait(false);
            await LinkToNodeAsync(Node, ns, owner, hostInterface, NodeIp, NodeIpv6, ip, ipv6, cancellationToken).ConfigureAwait(false);

            var client = new ExternalClient(name, ns, ip, ipv6, hostInterface);
            lock (_gate)
            {
                _clients.Add(client);
            }

            return client;
        }
        catch
        {
            ReleaseOwner(owner, throwOnError: false);
            throw;
        }
    }

    /// <summary>
    /// Wires <paramref name="ns"/> (a pod, an external client or a remote node) to <paramref name="router"/> (the node,
    /// or a remote node for its pods) with a point-to-point veth (see README.md):
    /// <paramref name="hostInterface"/> in the router, <c>eth0</c> in <paramref name="ns"/>. The router side gets
    /// <paramref name="nodeSideV4"/>/32 and <paramref name="nodeSideV6"/>/128 plus a host route to the peer's
    /// <paramref name="ip"/>/32 and <paramref name="ipv6"/>/128; the peer gets those addresses and routes everything via
    /// the router side. No bridge: every packet between peers is routed by the router, so it goes through its
    /// netfilter hooks and conntrack. The router-side address is only ever a next hop on this link, so pods can all
    /// share one. Nothing is in a common subnet, hence the on-link route to the next hop before each default route;
    /// IPv6 addresses skip DAD (<c>nodad</c>) so they are usable at once. The router-side veth is tracked before it
    /// exists, so a half-finished wiring is cleaned up with <paramref name="owner"/>.
    /// </summary>
    private async Task LinkToNodeAsync(
        NetworkNamespace router,
        NetworkNamespace ns,
        string owner,
        string hostInterface,
        string nodeSideV4,
        string nodeSideV6,
        string ip,
        string ipv6,
        CancellationToken cancellationToken)
    {
        TrackNodeVeth(owner, router, hostInterface);
        await router.IpBatchAsync(
            [
                $"link add {hostInterface} type veth peer name eth0 netns {ns.Name}",
                $"addr add {nodeSideV4}/32 dev {hostInterface}",
                $"addr add {nodeSideV6}/128 dev {hostInterface} nodad",
                $"link set {hostInterface} up",
                $"route add {ip}/32 dev {hostInterface}",
                $"route add {ipv6}/128 dev {hostInterface}",
            ],
            cancellationToken).ConfigureAwait(false);
        await ns.IpBatchAsync(
            [
                "link set lo up",
                $"addr add {ip}/32 dev eth0",
                $"addr add {ipv6}/128 dev eth0 nodad",
                "link set eth0 up",
                $"route add {nodeSideV4} dev eth0",
                $"route add default via {nodeSideV4} dev eth0",
                $"route add {nodeSideV6} dev eth0",
                $"route add default via {nodeSideV6} dev eth0",
            ],
            cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Creates <c>{Prefix}-{suffix}</c>, tracked before it exists so a half-finished creation is cleaned up too.</summary>
    private async Task<NetworkNamespace> CreateNamespaceAsync(string suffix, string owner, CancellationToken cancellationToken)
    {
        var name = $"{Prefix}-{suffix}";
        NetworkNamespace? created = null;
        Track(owner, $"netns {name}", () =>
        {
            if (created is not null)
            {
                created.Dispose();
            }
            else
            {
                DeleteNamespaceByName(name);
            }
        });
        created = await NetworkNamespace.CreateAsync(name, cancellationToken).ConfigureAwait(false);
        await created.IpBatchAsync(["link set lo up"], cancellationToken).ConfigureAwait(false);
        return created;
    }

    private void Track(string owner, string description, Action release, bool onlyWhenRemovedAlone = false)
    {
        lock (_gate)
        {
            ThrowIfTornDown();
            _resources.Add(new Resource(owner, description, release, onlyWhenRemovedAlone));
        }
    }

    /// <summary>
    /// Deleting a namespace is asynchronous in the kernel (its veths and the router's routes through them vanish a
    /// moment later), so removing a single pod, client or remote node deletes the router-side veth explicitly first.
    /// Not needed when the whole sandbox goes: the routers' namespaces are deleted then.
    /// </summary>
    private void TrackNodeVeth(string owner, NetworkNamespace router, string hostInterface)
    {
        Track(
            owner,
            $"veth {hostInterface} in {router.Name}",
            () =>
            {
                var result = NetworkNamespace.Ip(["-n", router.Name, "link", "del", hostInterface]);
                if (!result.Succeeded && !result.StandardError.Contains("Cannot find device", StringComparison.Ordinal))
                {
                    throw new SandboxCommandException($"ip -n {router.Name} link del {hostInterface}", result);
                }
            },
            onlyWhenRemovedAlone: true);
    }

    /// <summary>Releases the resources of one owner in reverse creation order; returns whether all went well.</summary>
    private bool ReleaseOwner(string owner, bool throwOnError)
    {
        Resource[] resources;
        lock (_gate)
        {
            resources = _resources.Where(r => r.Owner == owner).Reverse().ToArray();
            _resources.RemoveAll(r => r.Owner == owner);
        }

        var errors = Release(resources);
        if (throwOnError && errors.Count > 0)
        {
            throw new SandboxException($"Removing {owner} was incomplete: {errors[0].Message}", new AggregateException(errors));
        }

        return errors.Count == 0;
    }

    private void TearDown(bool throwOnError)
    {
        // Held for the whole teardown: a signal arriving during DisposeAsync waits for it to finish instead of
        // returning early and letting the process die half-way.
        lock (_tearDownGate)
        {
            TearDownCore(throwOnError);
        }
    }

    private void TearDownCore(bool throwOnError)
    {
        Resource[] resources;
        IDisposable[] registrations;
        lock (_gate)
        {
            if (_tornDown)
            {
                return;
            }

            _tornDown = true;
            resources = Enumerable.Reverse(_resources).Where(r => !r.OnlyWhenRemovedAlone).ToArray();
            _resources.Clear();
            registrations = _signalRegistrations.ToArray();
            _signalRegistrations.Clear();
            _pods.Clear();
            _remoteNodes.Clear();
        }

        var errors = Release(resources);

        // Belt and braces: anything named after this run that is still there (e.g. created by a command that was
        // cancelled half-way) goes too.
        foreach (var name in NetworkNamespace.ListNames().Where(n => n.StartsWith(Prefix + "-", StringComparison.Ordinal)))
        {
            try
            {
                DeleteNamespaceByName(name);
            }
            catch (Exception e) when (e is SandboxException or TimeoutException)
            {
                errors.Add(e);
            }
        }

        foreach (var registration in registrations)
        {
            registration.Dispose();
        }

        if (throwOnError && errors.Count > 0)
        {
            throw new SandboxException($"Sandbox {Prefix} cleanup was incomplete: {errors[0].Message}", new AggregateException(errors));
        }
    }

    private static List<Exception> Release(IEnumerable<Resource> resources)
    {
        var errors = new List<Exception>();
        foreach (var resource in resources)
        {
            try
            {
                resource.Release();
            }
            catch (Exception e)
            {
                errors.Add(new SandboxException($"Could not release {resource.Description}: {e.Message}", e));
            }
        }

        return errors;
    }

    private void RegisterExitCleanup()
    {
        void OnSignal(PosixSignalContext context) => EmergencyTearDown();
        void OnProcessExit(object? sender, EventArgs e) => EmergencyTearDown();

        AppDomain.CurrentDomain.ProcessExit += OnProcessExit;
        lock (_gate)
        {
            _signalRegistrations.Add(PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal));
            _signalRegistrations.Add(PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal));
            _signalRegistrations.Add(new ProcessExitRegistration(OnProcessExit));
        }
    }

    private void EmergencyTearDown()
    {
        try
        {
            TearDown(throwOnError: false);
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"ProxyPlanes sandbox {Prefix}: cleanup on exit failed: {e.Message}");
        }
    }

    private void ThrowIfTornDown() => ObjectDisposedException.ThrowIf(_tornDown, this);

    [GeneratedRegex("^pp[0-9a-f]{5}$", RegexOptions.CultureInvariant)]
    private static partial Regex RunPrefixPattern();

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$", RegexOptions.CultureInvariant)]
    private static partial Regex MemberNamePattern();

    private sealed record Resource(string Owner, string Description, Action Release, bool OnlyWhenRemovedAlone);

    /// <summary>Where a pod is wired: the namespace routing for it, its Kubernetes node name, gateway and address prefixes.</summary>
    private readonly record struct PodSite(
        NetworkNamespace Router,
        string NodeName,
        string Gateway,
        string GatewayV6,
        string AddressPrefix,
        string AddressPrefixV6);

    private sealed class ProcessExitRegistration(EventHandler handler) : IDisposable
    {
        public void Dispose() => AppDomain.CurrentDomain.ProcessExit -= handler;
    }
}
