using System.Security.Cryptography.X509Certificates;
using System.Text;
using ProxyPlanes.Model;
using ProxyPlanes.Sources.Kubernetes;
using ProxyPlanes.TestKit;
using static ProxyPlanes.Core.Tests.Kubernetes.Objects;

namespace ProxyPlanes.Core.Tests.Kubernetes;

public class KubernetesClientConfigTests
{
    private static string B64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    private static string Kubeconfig(string cluster, string user, string currentContext = "main", string extraContexts = "") => $"""
        apiVersion: v1
        kind: Config
        current-context: {currentContext}
        clusters:
        - name: other
          cluster:
            server: https://other.example:6443
        - name: c1
          cluster:
        {Indent(cluster, 4)}
        contexts:
        - name: elsewhere
          context:
            cluster: other
            user: u1
        - name: main
          context:
            cluster: c1
            user: u1
            namespace: kube-system
        {extraContexts}
        users:
        - name: u1
          user:
        {Indent(user, 4)}
        """;

    private static string Indent(string text, int spaces) =>
        string.Join("\n", text.Split('\n').Select(l => new string(' ', spaces) + l));

    [Fact]
    public void FromKubeconfig_TokenAndRelativeCaFile_ReadsTheCurrentContext()
    {
        using var certs = new TestCertificates();
        using var dir = new ScratchDirectory();
        dir.Write("ca.crt", certs.CaPem);
        var path = dir.Write("config", Kubeconfig("server: https://127.0.0.1:6443\ncertificate-authority: ca.crt", "token: abc.def"));

        var config = KubernetesClientConfig.FromKubeconfig(path);

        Assert.Equal(new Uri("https://127.0.0.1:6443"), config.Server);
        Assert.Equal("abc.def", config.Token);
        Assert.Null(config.TokenFile);
        Assert.Null(config.ClientCertificate);
        Assert.Equal(certs.Ca.Thumbprint, Assert.Single(config.CertificateAuthorities!).Thumbprint);
        Assert.False(config.InsecureSkipTlsVerify);
        Assert.Equal("kube-system", config.Namespace);
        Assert.Contains("context main", config.Origin);
    }

    [Fact]
    public void FromKubeconfig_NamedContext_WinsOverCurrentContext()
    {
        using var dir = new ScratchDirectory();
        var path = dir.Write("config", Kubeconfig("server: https://127.0.0.1:6443\ninsecure-skip-tls-verify: true", "token: t"));

        var config = KubernetesClientConfig.FromKubeconfig(path, "elsewhere");

        Assert.Equal(new Uri("https://other.example:6443"), config.Server);
    }

    [Fact]
    public void FromKubeconfig_CaDataAndInsecure_ReadsBoth()
    {
        using var certs = new TestCertificates();
        using var dir = new ScratchDirectory();
        var withData = KubernetesClientConfig.FromKubeconfig(dir.Write("a", Kubeconfig($"server: https://h:1\ncertificate-authority-data: {B64(certs.CaPem)}", "token: t")));
        var insecure = KubernetesClientConfig.FromKubeconfig(dir.Write("b", Kubeconfig("server: https://h:1\ninsecure-skip-tls-verify: true", "token: t")));

        Assert.Equal(certs.Ca.Thumbprint, Assert.Single(withData.CertificateAuthorities!).Thumbprint);
        Assert.True(insecure.InsecureSkipTlsVerify);
        Assert.Null(insecure.CertificateAuthorities);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void FromKubeconfig_ClientCertificateData_LoadsRsaAndEcKeys(bool rsa)
    {
        using var certs = new TestCertificates();
        using var dir = new ScratchDirectory();
        var (cert, key) = certs.Client("system:node:node-a", rsa);
        var path = dir.Write("config", Kubeconfig(
            $"server: https://127.0.0.1:6443\ncertificate-authority-data: {B64(certs.CaPem)}",
            $"client-certificate-data: {B64(cert)}\nclient-key-data: {B64(key)}"));

        var config = KubernetesClientConfig.FromKubeconfig(path);

        Assert.NotNull(config.ClientCertificate);
        Assert.True(config.ClientCertificate.HasPrivateKey);
        Assert.Contains("CN=system:node:node-a", config.ClientCertificate.Subject);
        Assert.Null(config.Token);
    }

    [Fact]
    public void FromKubeconfig_ClientCertificateFiles_LoadRelativeToTheKubeconfig()
    {
        using var certs = new TestCertificates();
        using var dir = new ScratchDirectory();
        var (cert, key) = certs.Client("proxy", rsa: false);
        Directory.CreateDirectory(Path.Combine(dir.Path, "pki"));
        dir.Write("pki/client.crt", cert);
        dir.Write("pki/client.key", key);
        var path = dir.Write("config", Kubeconfig("server: https://h:1", "client-certificate: pki/client.crt\nclient-key: pki/client.key"));

        var config = KubernetesClientConfig.FromKubeconfig(path);

        Assert.True(config.ClientCertificate!.HasPrivateKey);
    }

    [Fact]
    public async Task FromKubeconfig_TokenFile_IsSentAsTheBearerToken()
    {
        await using var server = await FakeApiServer.StartAsync();
        server.Authorize = header => header == "Bearer from-the-file";
        server.Nodes.Seed(Node("node-a"));
        using var dir = new ScratchDirectory();
        dir.Write("token", "from-the-file\n");
        var path = dir.Write("config", Kubeconfig($"server: {server.BaseUri}", "token: ignored-once-the-file-is-read\ntokenFile: token"));
        var config = KubernetesClientConfig.FromKubeconfig(path);
        using var client = new KubernetesApiClient(config);

        var list = await client.ListAsync(KubernetesResources.Nodes, default, null, null, CancellationToken.None);

        Assert.Equal(Path.Combine(dir.Path, "token"), config.TokenFile);
        Assert.Equal("node-a", Assert.Single(list.Items!).Metadata!.Name);
        Assert.Equal("Bearer from-the-file", Assert.Single(server.Requests).Authorization);
    }

    public static TheoryData<string, string, string, string> BadKubeconfigs()
    {
        const string Server = "server: https://127.0.0.1:6443";
        return new()
        {
            { "bad base64", Kubeconfig($"{Server}\ncertificate-authority-data: '%%%not base64'", "token: t"), "clusters[c1].cluster.certificate-authority-data", "not valid base64" },
            { "CA data not PEM", Kubeconfig($"{Server}\ncertificate-authority-data: {B64("hello")}", "token: t"), "clusters[c1].cluster.certificate-authority-data", "no PEM certificate" },
            { "CA file missing", Kubeconfig($"{Server}\ncertificate-authority: missing-ca.crt", "token: t"), "clusters[c1].cluster.certificate-authority", "missing-ca.crt" },
            { "insecure with CA", Kubeconfig($"{Server}\ninsecure-skip-tls-verify: true\ncertificate-authority: ca.crt", "token: t"), "clusters[c1].cluster.insecure-skip-tls-verify", "not both" },
            { "insecure not a bool", Kubeconfig($"{Server}\ninsecure-skip-tls-verify: maybe", "token: t"), "clusters[c1].cluster.insecure-skip-tls-verify", "'maybe' is not true or false" },
            { "no server", Kubeconfig("certificate-authority: ca.crt", "token: t"), "clusters[c1].cluster.server", "is not set" },
            { "server not a URL", Kubeconfig("server: 127.0.0.1:6443", "token: t"), "clusters[c1].cluster.server", "not an https://" },
            { "no current context", Kubeconfig(Server, "token: t", currentContext: "''"), "current-context", "is not set" },
            { "unknown context", Kubeconfig(Server, "token: t", currentContext: "nope"), "contexts", "no context named 'nope'" },
            { "unknown cluster", Kubeconfig(Server, "token: t", currentContext: "broken", extraContexts: "- name: broken\n  context:\n    cluster: gone\n    user: u1"), "contexts[broken].context.cluster", "no cluster named 'gone'" },
            { "token file missing", Kubeconfig(Server, "tokenFile: /nonexistent/token"), "users[u1].user.tokenFile", "/nonexistent/token" },
            { "cert without key", Kubeconfig(Server, $"client-certificate-data: {B64("x")}"), "users[u1].user.client-key-data", "needs its key" },
            { "exec only", Kubeconfig(Server, "exec:\n  command: aws"), "users[u1].user.exec", "not supported" },
            { "proxy-url", Kubeconfig($"{Server}\nproxy-url: http://proxy:3128", "token: t"), "clusters[c1].cluster.proxy-url", "not supported" },
        };
    }

    [Theory]
    [MemberData(nameof(BadKubeconfigs))]
    public void FromKubeconfig_BadField_ErrorNamesTheFileAndField(string why, string kubeconfig, string field, string problem)
    {
        using var certs = new TestCertificates();
        using var dir = new ScratchDirectory();
        dir.Write("ca.crt", certs.CaPem);
        var path = dir.Write("config", kubeconfig);

        var error = Assert.Throws<KubernetesConfigException>(() => KubernetesClientConfig.FromKubeconfig(path));

        Assert.True(field == error.Field, $"{why}: field {error.Field}, message {error.Message}");
        Assert.Equal(path, error.File);
        Assert.StartsWith(path, error.Message);
        Assert.Contains(field, error.Message);
        Assert.Contains(problem, error.Message);
    }

    [Fact]
    public void FromKubeconfig_KeyOfAnotherCertificate_ErrorNamesTheKeyField()
    {
        using var certs = new TestCertificates();
        using var dir = new ScratchDirectory();
        var (cert, _) = certs.Client("a", rsa: true);
        var (_, otherKey) = certs.Client("b", rsa: true);
        var path = dir.Write("config", Kubeconfig("server: https://h:1", $"client-certificate-data: {B64(cert)}\nclient-key-data: {B64(otherKey)}"));

        var error = Assert.Throws<KubernetesConfigException>(() => KubernetesClientConfig.FromKubeconfig(path));

        Assert.Equal("users[u1].user.client-key-data", error.Field);
        Assert.NotNull(error.Line);
        Assert.Contains($"{path}:{error.Line}: users[u1].user.client-key-data: ", error.Message);
    }

    [Fact]
    public void FromKubeconfig_InvalidYaml_ErrorNamesTheFileAndLine()
    {
        using var dir = new ScratchDirectory();
        var path = dir.Write("config", "clusters:\n- name: c1\n  cluster: [unclosed\n");

        var error = Assert.Throws<KubernetesConfigException>(() => KubernetesClientConfig.FromKubeconfig(path));

        Assert.Null(error.Field);
        Assert.NotNull(error.Line);
        Assert.Contains("is not valid YAML", error.Message);
    }

    [Fact]
    public void FromKubeconfig_MissingFile_ErrorNamesIt()
    {
        var path = Path.Combine(Path.GetTempPath(), "proxyplanes-no-such-kubeconfig-" + Guid.NewGuid().ToString("N"));

        var error = Assert.Throws<KubernetesConfigException>(() => KubernetesClientConfig.FromKubeconfig(path));

        Assert.Equal(path, error.File);
        Assert.Contains("cannot read the kubeconfig", error.Message);
    }

    [Fact]
    public void InCluster_InjectedDirectory_ReadsEnvironmentTokenCaAndNamespace()
    {
        using var certs = new TestCertificates();
        using var dir = ServiceAccount(certs, "sa-token");

        var config = KubernetesClientConfig.InCluster(dir.Path, Environment("10.96.0.1", "443"));
        var v6 = KubernetesClientConfig.InCluster(dir.Path, Environment("fd00::1", "6443"));

        Assert.Equal(new Uri("https://10.96.0.1:443"), config.Server);
        Assert.Equal(new Uri("https://[fd00::1]:6443"), v6.Server);
        Assert.Equal(Path.Combine(dir.Path, "token"), config.TokenFile);
        Assert.Equal(certs.Ca.Thumbprint, Assert.Single(config.CertificateAuthorities!).Thumbprint);
        Assert.Equal("kube-system", config.Namespace);
    }

    [Theory]
    [InlineData(null, "443", "KUBERNETES_SERVICE_HOST", "not running in a pod")]
    [InlineData("10.96.0.1", null, "KUBERNETES_SERVICE_PORT", "not running in a pod")]
    [InlineData("10.96.0.1", "https", "KUBERNETES_SERVICE_PORT", "not a port number")]
    public void InCluster_BadEnvironment_ErrorNamesTheVariable(string? host, string? port, string variable, string problem)
    {
        using var certs = new TestCertificates();
        using var dir = ServiceAccount(certs, "t");

        var error = Assert.Throws<KubernetesConfigException>(() => KubernetesClientConfig.InCluster(dir.Path, Environment(host, port)));

        Assert.Equal(variable, error.Field);
        Assert.Contains(variable, error.Message);
        Assert.Contains(problem, error.Message);
    }

    [Theory]
    [InlineData("token", null, "cannot read the file")]
    [InlineData("token", "  \n", "the token file is empty")]
    [InlineData("ca.crt", null, "cannot read the file")]
    [InlineData("ca.crt", "not a certificate", "holds no PEM certificate")]
    public void InCluster_BadServiceAccountFile_ErrorNamesTheFile(string file, string? content, string problem)
    {
        using var certs = new TestCertificates();
        using var dir = ServiceAccount(certs, "t");
        var path = Path.Combine(dir.Path, file);
        if (content is null) File.Delete(path);
        else File.WriteAllText(path, content);

        var error = Assert.Throws<KubernetesConfigException>(() => KubernetesClientConfig.InCluster(dir.Path, Environment("10.96.0.1", "443")));

        Assert.Equal(path, error.File);
        Assert.StartsWith(path + ": ", error.Message);
        Assert.Contains(problem, error.Message);
    }

    [Fact]
    public async Task InCluster_TokenRotated_ReReadAfterAMinuteOrAt401()
    {
        using var certs = new TestCertificates();
        await using var server = await FakeApiServer.StartAsync(certs.Server);
        server.Nodes.Seed(Node("node-a"));
        using var dir = ServiceAccount(certs, "token-1");
        var accepted = new HashSet<string> { "Bearer token-1" };
        server.Authorize = header => header is not null && accepted.Contains(header);
        var clock = new SteppedClock(DateTimeOffset.UnixEpoch);
        var config = KubernetesClientConfig.InCluster(dir.Path, Environment("127.0.0.1", server.BaseUri.Port.ToString()));
        using var client = new KubernetesApiClient(config, new KubernetesApiClientOptions { TimeProvider = clock });
        Task List() => client.ListAsync(KubernetesResources.Nodes, default, null, null, CancellationToken.None);

        await List();
        // The kubelet rotates the token; the server stops accepting the old one at once: 401, re-read, retried.
        File.WriteAllText(Path.Combine(dir.Path, "token"), "token-2");
        accepted = ["Bearer token-2"];
        await List();
        // Rotated again while both are valid: the cached token is used until a minute has passed.
        File.WriteAllText(Path.Combine(dir.Path, "token"), "token-3");
        accepted = ["Bearer token-2", "Bearer token-3"];
        clock.Advance(TimeSpan.FromSeconds(30));
        await List();
        clock.Advance(TimeSpan.FromSeconds(31));
        await List();

        Assert.Equal(
            ["Bearer token-1", "Bearer token-1", "Bearer token-2", "Bearer token-2", "Bearer token-3"],
            server.Requests.Select(r => r.Authorization));
        Assert.All(server.Requests, r => Assert.Equal("HTTP/2", r.Protocol));
    }

    [Fact]
    public async Task Create_TlsWithClientCertificateFromKubeconfig_DeliversTheInitialState()
    {
        using var certs = new TestCertificates();
        await using var server = await FakeApiServer.StartAsync(certs.Server, clientCa: certs.Ca);
        server.Services.Seed(Service("web"));
        server.EndpointSlices.Seed(Slice("web-1", "web", "10.244.1.5"));
        server.Nodes.Seed(Node("node-a"));
        using var dir = new ScratchDirectory();
        var (cert, key) = certs.Client("system:kube-proxy", rsa: true);
        var kubeconfig = dir.Write("kubeconfig", Kubeconfig(
            $"server: https://127.0.0.1:{server.BaseUri.Port}\ncertificate-authority-data: {B64(certs.CaPem)}",
            $"client-certificate-data: {B64(cert)}\nclient-key-data: {B64(key)}"));
        var logger = new ListLogger();
        using var source = KubernetesSource.Create(kubeconfig, "node-a", logger);
        var sink = new RecordingSink();
        using var stop = new CancellationTokenSource();

        var run = source.RunAsync(sink, stop.Token);
        await sink.WaitForInitialAsync();
        await stop.CancelAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(["Add Service default/web", "Add EndpointSlice default/web-1", "Add Node node-a"],
            sink.Calls.Select(c => c.ToString()).OrderBy(s => s.Contains("Service ") ? 0 : s.Contains("Slice") ? 1 : 2));
        Assert.All(server.Requests, r =>
        {
            Assert.Equal("HTTP/2", r.Protocol);
            Assert.Contains("CN=system:kube-proxy", r.ClientCertificateSubject);
        });
        Assert.Contains(logger.Entries, e => e.Message.Contains($"kubeconfig {kubeconfig}", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ListAsync_ServerCertificateOfAnotherCa_FailsTheHandshake()
    {
        using var certs = new TestCertificates();
        using var otherCa = new TestCertificates();
        await using var server = await FakeApiServer.StartAsync(certs.Server);
        using var client = new KubernetesApiClient(new KubernetesClientConfig
        {
            Server = server.BaseUri,
            CertificateAuthorities = [X509CertificateLoader.LoadCertificate(otherCa.Ca.RawData)],
        });

        var error = await Assert.ThrowsAsync<HttpRequestException>(
            () => client.ListAsync(KubernetesResources.Nodes, default, null, null, CancellationToken.None));

        Assert.IsType<System.Security.Authentication.AuthenticationException>(error.InnerException);
        Assert.Empty(server.Requests);
    }

    [Fact]
    public async Task ListAsync_TlsServerNameDiffersFromTheHost_ValidatesAgainstIt()
    {
        using var certs = new TestCertificates();
        await using var server = await FakeApiServer.StartAsync(certs.Server);
        server.Nodes.Seed(Node("node-a"));
        KubernetesClientConfig Config(string name) => new()
        {
            Server = server.BaseUri,
            CertificateAuthorities = [X509CertificateLoader.LoadCertificate(certs.Ca.RawData)],
            TlsServerName = name,
        };
        using var good = new KubernetesApiClient(Config("kubernetes.default.svc"));
        using var bad = new KubernetesApiClient(Config("not-in-the-certificate.example"));

        var list = await good.ListAsync(KubernetesResources.Nodes, default, null, null, CancellationToken.None);
        await Assert.ThrowsAsync<HttpRequestException>(() => bad.ListAsync(KubernetesResources.Nodes, default, null, null, CancellationToken.None));

        Assert.Single(list.Items!);
    }

    private static ScratchDirectory ServiceAccount(TestCertificates certs, string token)
    {
        var dir = new ScratchDirectory();
        dir.Write("token", token);
        dir.Write("ca.crt", certs.CaPem);
        dir.Write("namespace", "kube-system");
        return dir;
    }

    private static Func<string, string?> Environment(string? host, string? port) => name => name switch
    {
        "KUBERNETES_SERVICE_HOST" => host,
        "KUBERNETES_SERVICE_PORT" => port,
        _ => null,
    };
}
