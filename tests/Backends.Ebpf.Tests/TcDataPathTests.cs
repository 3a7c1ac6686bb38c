using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using ProxyPlanes.Sandbox;
using ProxyPlanes.TestKit;
using Xunit.Abstractions;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// bpf/tc.c with real packets: a <see cref="ClusterSandbox"/> (client namespace — veth — node namespace
/// — veth — two pod namespaces, each pod's busybox httpd answering <c>pod=NAME src=CLIENT</c>), the tc
/// pair attached on the node's client-facing veth (vext0, inside the node namespace), maps filled by
/// hand, the fixed nftables table applied in the node namespace. The client connects over TCP to a
/// node port on the node's address and to an external IP, and sends UDP to a node port; nothing proxies
/// but the programs. The TCP handshake completing (and a connected UDP socket getting its answer)
/// proves that the replies reach the client from the address it connected to. Run over clsact and over
/// <see cref="TcAttachMode.Auto"/>, which must pick tcx where the kernel has it (the development kernel) and clsact
/// where it has not (the VM lane's Debian 6.1: <c>EbpfInVmTests</c> reads the "tc attach" line this prints).
/// </summary>
public sealed class TcDataPathTests(ITestOutputHelper output)
{
    private const string ExternalIp = "198.51.100.100";
    private const string EmptyExternalIp = "198.51.100.101";
    private const string DropExternalIp = "198.51.100.102";
    private const int NodePort = 30080;
    private const int UdpNodePort = 30053;
    private const int EmptyUdpNodePort = 30054;
    private const int PodPort = 8080;
    private const int Connections = 24;
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(3);

    [KernelTheory]
    [InlineData(TcAttachMode.Auto)]
    [InlineData(TcAttachMode.Clsact)]
    public async Task NodePortAndExternalIp_FromTheClient_ReachBothPods_SourceKeptOrMasqueraded(TcAttachMode mode)
    {
        await using var sandbox = await ClusterSandbox.CreateAsync();
        var podA = await sandbox.AddPodAsync("web-a");
        var podB = await sandbox.AddPodAsync("web-b");
        using var tc = TcPrograms.Load();
        FillMaps(tc, sandbox, podA, podB);
        sandbox.Node.Run(EbpfNftables.Apply);
        sandbox.Node.Run(EbpfNftables.Apply); // a restart applies it again: replaced in one transaction, not an error

        var attachments = sandbox.Node.Run(() => new[]
        {
            tc.Program(TcPrograms.Ingress).AttachTc(sandbox.PrimaryClient.HostInterface, TcDirection.Ingress, mode),
            tc.Program(TcPrograms.Egress).AttachTc(sandbox.PrimaryClient.HostInterface, TcDirection.Egress, mode),
        });
        try
        {
            // Auto: tcx where the kernel's BTF knows it, else clsact (the test's own probe, not the loader's).
            var expected = mode != TcAttachMode.Auto ? mode : BpfTestSupport.KernelHasTcx ? TcAttachMode.Tcx : TcAttachMode.Clsact;
            Assert.All(attachments, attachment => Assert.Equal(expected, attachment.Mode));
            output.WriteLine($"tc attach {mode}: {string.Join(", ", attachments.Select(a => a.Mode))} on kernel {BpfTestSupport.KernelVersion} (tcx {(BpfTestSupport.KernelHasTcx ? "present" : "absent")})");
            if (!BpfTestSupport.KernelHasTcx)
            {
                // Asked for by name on a kernel without it: one line that says so and names the way out.
                var tcxRefused = Assert.Throws<BpfException>(() => sandbox.Node.Run(() => tc.Program(TcPrograms.Ingress).AttachTc(sandbox.PrimaryClient.HostInterface, TcDirection.Ingress, TcAttachMode.Tcx)));
                Assert.Contains("this kernel has no tcx", tcxRefused.Message, StringComparison.Ordinal);
                output.WriteLine($"tcx by name: {tcxRefused.Message}");
            }

            // Node port on the node's address, no masquerade: each pod sees the client itself.
            var nodePortBodies = await Probe(sandbox, sandbox.NodeIp, NodePort);
            Assert.Equal([podA.ExpectedWho(sandbox.ClientIp), podB.ExpectedWho(sandbox.ClientIp)], nodePortBodies.Distinct().Order(StringComparer.Ordinal));

            // External IP with the masquerade flag: each pod sees the node (its pod-facing address).
            var externalBodies = await Probe(sandbox, ExternalIp, 80);
            Assert.Equal([podA.ExpectedWho(sandbox.NodePodGatewayIp), podB.ExpectedWho(sandbox.NodePodGatewayIp)], externalBodies.Distinct().Order(StringComparer.Ordinal));

            // UDP to a node port: both pods, the client's own address, and (a connected socket) the reply from the node port.
            var udpTexts = new List<string>();
            for (var i = 0; i < Connections; i++)
            {
                var udp = await sandbox.Client.UdpRequestAsync(sandbox.NodeIp, UdpNodePort, "who", ProbeTimeout);
                Assert.True(udp.IsAnswered, $"datagram {i} to {sandbox.NodeIp}:{UdpNodePort}: {udp}");
                udpTexts.Add(udp.Text.Trim());
            }
            Assert.Equal([podA.ExpectedWho(sandbox.ClientIp), podB.ExpectedWho(sandbox.ClientIp)], udpTexts.Distinct().Order(StringComparer.Ordinal));
            var udpRefused = await sandbox.Client.UdpRequestAsync(sandbox.NodeIp, EmptyUdpNodePort, "who", ProbeTimeout);
            Assert.Equal(ProbeOutcome.Refused, udpRefused.Outcome); // the table's icmp port-unreachable

            // A frontend without endpoints is refused at once (the table's tcp reset); with DROP it times out.
            var watch = Stopwatch.StartNew();
            var refused = await sandbox.Client.HttpGetAsync(EmptyExternalIp, 80, "/", ProbeTimeout);
            Assert.Equal(ProbeOutcome.Refused, refused.Outcome);
            Console.WriteLine($"{mode}: refused in {watch.Elapsed.TotalMilliseconds:F1} ms");
            var dropped = await sandbox.Client.HttpGetAsync(DropExternalIp, 80, "/", TimeSpan.FromSeconds(1));
            Assert.Equal(ProbeOutcome.TimedOut, dropped.Outcome);

            // Every connection left a forward and a reply entry: each TCP connection its own (2 × Connections); the
            // datagrams come from sockets that draw a random ephemeral port each, and two of 24 draw the same one
            // about once in a hundred runs (then they share an entry), so UDP must show most, not all, of them.
            var replies = tc.Map(MapLayout.ConnectionsMap).Keys<Ct4Key>().Where(k => k.Direction == MapLayout.ConnectionReply).ToList();
            Assert.True(replies.Count(k => k.Proto == (byte)ProtocolType.Tcp) >= 2 * Connections, string.Join("\n", replies));
            Assert.True(replies.Count(k => k.Proto == (byte)ProtocolType.Udp) >= Connections / 2, string.Join("\n", replies));
        }
        finally
        {
            foreach (var attachment in attachments) attachment.Dispose();
        }

        // Control: with the programs detached, the node port is just a closed port of the node.
        var afterDetach = await sandbox.Client.HttpGetAsync(sandbox.NodeIp, NodePort, "/cgi-bin/who", ProbeTimeout);
        Assert.Equal(ProbeOutcome.Refused, afterDetach.Outcome);
        sandbox.Node.Run(EbpfNftables.Remove);
        var tables = await sandbox.Node.ExecAsync("nft", "list", "tables");
        Assert.DoesNotContain(EbpfNftables.Table, tables.StandardOutput, StringComparison.Ordinal);
    }

    [KernelFact(needsTcx: true)]
    public async Task Tcx_LinkPinnedOnAPrivateBpfFs_StaysAttachedAfterItsFdIsClosed()
    {
        await using var sandbox = await ClusterSandbox.CreateAsync();
        var pod = await sandbox.AddPodAsync("web-a");
        using var tc = TcPrograms.Load();
        FillMaps(tc, sandbox, pod);
        using var bpffs = new TestBpfFs();
        var pin = Path.Combine(bpffs.Path, "tc-ingress");
        sandbox.Node.Run(() =>
        {
            using var ingress = tc.Program(TcPrograms.Ingress).AttachTc(sandbox.PrimaryClient.HostInterface, TcDirection.Ingress, TcAttachMode.Tcx);
            ingress.Pin(pin);
        });
        using var egress = sandbox.Node.Run(() => tc.Program(TcPrograms.Egress).AttachTc(sandbox.PrimaryClient.HostInterface, TcDirection.Egress, TcAttachMode.Auto));
        Assert.Equal(TcAttachMode.Tcx, egress.Mode); // Auto on a kernel with tcx (6.6 and later)

        var pinned = await sandbox.Client.HttpGetAsync(sandbox.NodeIp, NodePort, "/cgi-bin/who", ProbeTimeout);
        File.Delete(pin);
        // The last reference is gone; the kernel frees a pinned inode after an RCU grace period, so the
        // link goes away shortly after the unlink, not during it: poll (at most 20 times, 100 ms apart).
        var unpinned = await sandbox.Client.HttpGetAsync(sandbox.NodeIp, NodePort, "/cgi-bin/who", ProbeTimeout);
        for (var attempt = 0; attempt < 20 && unpinned.Outcome != ProbeOutcome.Refused; attempt++)
        {
            await Task.Delay(100);
            unpinned = await sandbox.Client.HttpGetAsync(sandbox.NodeIp, NodePort, "/cgi-bin/who", ProbeTimeout);
        }

        Assert.Equal(pod.ExpectedWho(sandbox.ClientIp), pinned.Body);
        Assert.Equal(ProbeOutcome.Refused, unpinned.Outcome);
    }

    private static async Task<List<string>> Probe(ClusterSandbox sandbox, string address, int port)
    {
        var bodies = new List<string>();
        for (var i = 0; i < Connections; i++)
        {
            var result = await sandbox.Client.HttpGetAsync(address, port, "/cgi-bin/who", ProbeTimeout);
            Assert.True(result.IsAnswered, $"connection {i} to {address}:{port}: {result}");
            bodies.Add(result.Body.Trim());
        }
        return bodies;
    }

    /// <summary>TCP: a node port on the node's address (source kept), an external IP (masqueraded), one without endpoints, one that drops. UDP: a node port, one without endpoints.</summary>
    private static void FillMaps(BpfObject tc, ClusterSandbox sandbox, params SandboxPod[] pods)
    {
        var services = tc.Map(MapLayout.ServicesMap);
        var backends = tc.Map(MapLayout.BackendsMap);
        tc.Map(MapLayout.NodeAddressesMap).Update(MapLayout.NetworkAddress(IPAddress.Parse(sandbox.NodeIp)), default(NodeAddress));
        for (var i = 0; i < pods.Length; i++)
        {
            backends.Update((uint)i + 1, Backend.For(IPAddress.Parse(pods[i].IP), PodPort, ProtocolType.Tcp));
            backends.Update((uint)i + 101, Backend.For(IPAddress.Parse(pods[i].IP), PodPort, ProtocolType.Udp));
        }

        void Add(ServiceKey frontend, uint revNatId, ushort flags, int count)
        {
            var firstBackend = frontend.Proto == (byte)ProtocolType.Udp ? 101u : 1u;
            for (var slot = 1; slot <= count; slot++) services.Update(frontend.WithSlot(slot), ServiceValue.ForSlot(firstBackend + (uint)slot - 1));
            services.Update(frontend, ServiceValue.Master(count, revNatId, flags));
        }

        Add(ServiceKey.For(IPAddress.Any, NodePort, ProtocolType.Tcp), 1, MapLayout.ServiceFlagNodePort, pods.Length);
        Add(ServiceKey.For(IPAddress.Parse(ExternalIp), 80, ProtocolType.Tcp), 2, MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagMasquerade, pods.Length);
        Add(ServiceKey.For(IPAddress.Parse(EmptyExternalIp), 80, ProtocolType.Tcp), 3, MapLayout.ServiceFlagExternal, 0);
        Add(ServiceKey.For(IPAddress.Parse(DropExternalIp), 80, ProtocolType.Tcp), 4, MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagDrop, 0);
        Add(ServiceKey.For(IPAddress.Any, UdpNodePort, ProtocolType.Udp), 5, MapLayout.ServiceFlagNodePort, pods.Length);
        Add(ServiceKey.For(IPAddress.Any, EmptyUdpNodePort, ProtocolType.Udp), 6, MapLayout.ServiceFlagNodePort, 0);
    }
}
