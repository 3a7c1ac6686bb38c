using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace ProxyPlanes.Sources.Kubernetes;

/// <summary>
/// Where the API server is and how to authenticate to it: read from a kubeconfig file
/// (<see cref="FromKubeconfig"/>) or from the pod's service account (<see cref="InCluster"/>).
/// </summary>
public sealed class KubernetesClientConfig
{
    /// <summary>Where a pod's service account token, CA bundle and namespace are mounted.</summary>
    public const string DefaultServiceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount";

    /// <summary>The API server's base URL (may carry a path prefix, e.g. behind a gateway).</summary>
    public required Uri Server { get; init; }

    /// <summary>The roots the server's certificate must chain to; null trusts the system's roots.</summary>
    public X509Certificate2Collection? CertificateAuthorities { get; init; }

    /// <summary>Accept any server certificate (kubeconfig <c>insecure-skip-tls-verify</c>).</summary>
    public bool InsecureSkipTlsVerify { get; init; }

    /// <summary>The name the server's certificate must carry, when not the server URL's host (<c>tls-server-name</c>).</summary>
    public string? TlsServerName { get; init; }

    /// <summary>The client certificate, with its private key.</summary>
    public X509Certificate2? ClientCertificate { get; init; }

    /// <summary>A bearer token.</summary>
    public string? Token { get; init; }

    /// <summary>A file holding the bearer token, re-read as it rotates; wins over <see cref="Token"/> once read.</summary>
    public string? TokenFile { get; init; }

    public string? Username { get; init; }
    public string? Password { get; init; }

    /// <summary>The namespace of the context or the pod (informational: the proxy watches all namespaces).</summary>
    public string? Namespace { get; init; }

    /// <summary>Where this came from, for logs: <c>kubeconfig /root/.kube/config (context kind-kind)</c> or <c>in-cluster</c>.</summary>
    public string Origin { get; init; } = "";

    public override string ToString() => $"{Server} from {Origin}";

    /// <summary>
    /// The daemon's rule (as kube-proxy's): the kubeconfig file when one is given, else the pod's
    /// service account.
    /// </summary>
    public static KubernetesClientConfig Load(string? kubeconfigPath) =>
        string.IsNullOrEmpty(kubeconfigPath) ? InCluster() : FromKubeconfig(kubeconfigPath);

    /// <summary>
    /// Reads a kubeconfig file: the cluster and user of <paramref name="context"/> (default: the
    /// file's <c>current-context</c>). Relative file paths in it are relative to the file's folder.
    /// </summary>
    /// <exception cref="KubernetesConfigException">the file cannot be read, or a field is missing or wrong (named in the message).</exception>
    public static KubernetesClientConfig FromKubeconfig(string path, string? context = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var full = Path.GetFullPath(path);
        string text;
        try
        {
            text = File.ReadAllText(full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KubernetesConfigException(full, null, $"cannot read the kubeconfig: {e.Message}", innerException: e);
        }

        return new KubeconfigReader(full, text).Read(context);
    }

    /// <summary>
    /// The configuration of a pod: the server from <c>KUBERNETES_SERVICE_HOST</c> and
    /// <c>KUBERNETES_SERVICE_PORT</c>, the token and CA bundle from the service account directory.
    /// The token file is re-read as the kubelet rotates it.
    /// </summary>
    /// <param name="serviceAccountDirectory">default <see cref="DefaultServiceAccountDirectory"/>.</param>
    /// <param name="environment">reads an environment variable; default <see cref="Environment.GetEnvironmentVariable(string)"/>.</param>
    /// <exception cref="KubernetesConfigException">a variable or file is missing or wrong (named in the message).</exception>
    public static KubernetesClientConfig InCluster(string? serviceAccountDirectory = null, Func<string, string?>? environment = null)
    {
        var dir = serviceAccountDirectory ?? DefaultServiceAccountDirectory;
        environment ??= Environment.GetEnvironmentVariable;
        var host = environment("KUBERNETES_SERVICE_HOST");
        var port = environment("KUBERNETES_SERVICE_PORT");
        if (string.IsNullOrWhiteSpace(host) || string.IsNullOrWhiteSpace(port))
        {
            var missing = string.IsNullOrWhiteSpace(host) ? "KUBERNETES_SERVICE_HOST" : "KUBERNETES_SERVICE_PORT";
            throw new KubernetesConfigException("environment", missing,
                "is not set, so this is not running in a pod (give --kubeconfig to run outside the cluster)");
        }

        host = host.Trim();
        port = port.Trim();
        if (!int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out var portNumber) || portNumber is < 1 or > 65535)
            throw new KubernetesConfigException("environment", "KUBERNETES_SERVICE_PORT", $"'{port}' is not a port number");
        var hostPart = IPAddress.TryParse(host, out var ip) && ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{host}]" : host;
        if (!Uri.TryCreate($"https://{hostPart}:{portNumber}", UriKind.Absolute, out var server))
            throw new KubernetesConfigException("environment", "KUBERNETES_SERVICE_HOST", $"'{host}' is not a host name or address");

        // Read now so a missing or empty token is reported at start; the client re-reads it as it rotates.
        var tokenFile = Path.Combine(dir, "token");
        ReadTokenFile(tokenFile, tokenFile, null);
        var caFile = Path.Combine(dir, "ca.crt");
        var ca = ParseCertificates(ReadFile(caFile, caFile, null), caFile, null, "the file");
        string? ns = null;
        var nsFile = Path.Combine(dir, "namespace");
        if (File.Exists(nsFile))
        {
            try
            {
                ns = File.ReadAllText(nsFile).Trim();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // informational only
            }
        }

        return new KubernetesClientConfig
        {
            Server = server,
            CertificateAuthorities = ca,
            TokenFile = tokenFile,
            Namespace = string.IsNullOrEmpty(ns) ? null : ns,
            Origin = $"in-cluster ({dir})",
        };
    }

    /// <summary>Reads a token file; an unreadable or empty one is an error naming the file.</summary>
    internal static string ReadTokenFile(string tokenFile, string reportFile, string? field)
    {
        var token = Encoding.UTF8.GetString(ReadFile(tokenFile, reportFile, field)).Trim();
        if (token.Length == 0)
            throw new KubernetesConfigException(reportFile, field, reportFile == tokenFile ? "the token file is empty" : $"the token file {tokenFile} is empty");
        return token;
    }

    internal static byte[] ReadFile(string file, string reportFile, string? field)
    {
        try
        {
            return File.ReadAllBytes(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            var what = reportFile == file ? "cannot read the file" : $"cannot read {file}";
            throw new KubernetesConfigException(reportFile, field, $"{what}: {e.Message}", innerException: e);
        }
    }

    internal static X509Certificate2Collection ParseCertificates(byte[] pem, string file, string? field, string what, int? line = null)
    {
        var certificates = new X509Certificate2Collection();
        try
        {
            certificates.ImportFromPem(Encoding.UTF8.GetString(pem));
        }
        catch (CryptographicException e)
        {
            throw new KubernetesConfigException(file, field, $"{what} holds a malformed PEM certificate: {e.Message}", line, e);
        }

        if (certificates.Count == 0)
            throw new KubernetesConfigException(file, field, $"{what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", line);
        return certificates;
    }

    internal static X509Certificate2 ParseClientCertificate(
        byte[] certificatePem, byte[] keyPem, string file, (string Field, string What, int? Line) certificate, (string Field, string What, int? Line) key)
    {
        var certText = Encoding.UTF8.GetString(certificatePem);
        var keyText = Encoding.UTF8.GetString(keyPem);
        try
        {
            using var alone = X509Certificate2.CreateFromPem(certText);
        }
        catch (CryptographicException e)
        {
            throw new KubernetesConfigException(file, certificate.Field, $"{certificate.What} holds no valid PEM certificate: {e.Message}", certificate.Line, e);
        }

        if (!keyText.Contains("PRIVATE KEY-----", StringComparison.Ordinal))
            throw new KubernetesConfigException(file, key.Field, $"{key.What} holds no PEM private key (-----BEGIN PRIVATE KEY----- or an RSA or EC key)", key.Line);
        X509Certificate2 cert;
        try
        {
            cert = X509Certificate2.CreateFromPem(certText, keyText);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            throw new KubernetesConfigException(file, key.Field,
                $"{key.What} is not a usable private key for the client certificate (RSA or EC, PEM, matching the certificate): {e.Message}", key.Line, e);
        }

        if (OperatingSystem.IsWindows())
        {
            // SChannel cannot use an ephemeral key; give it a key it can find.
            using (cert)
                return X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pkcs12), null);
        }

        return cert;
    }

    /// <summary>Reads the kubeconfig's YAML, naming every field it finds wrong.</summary>
    private sealed class KubeconfigReader(string file, string text)
    {
        private readonly string _dir = Path.GetDirectoryName(file) ?? ".";

        public KubernetesClientConfig Read(string? contextName)
        {
            var root = LoadRoot();
            if (string.IsNullOrEmpty(contextName))
            {
                contextName = Scalar(root, "current-context", "current-context");
                if (string.IsNullOrEmpty(contextName))
                    throw Error("current-context", "is not set: the kubeconfig does not say which context to use", root);
            }

            var (context, contextPath) = Named(root, "contexts", contextName, "context")
                ?? throw Error("contexts", $"no context named '{contextName}'", root);
            var clusterName = Scalar(context, "cluster", contextPath + ".cluster");
            if (string.IsNullOrEmpty(clusterName)) throw Error(contextPath + ".cluster", "is not set", context);
            var (cluster, clusterPath) = Named(root, "clusters", clusterName, "cluster")
                ?? throw Error(contextPath + ".cluster", $"no cluster named '{clusterName}' in clusters", context);

            var serverText = Scalar(cluster, "server", clusterPath + ".server");
            if (string.IsNullOrEmpty(serverText)) throw Error(clusterPath + ".server", "is not set", cluster);
            if (!Uri.TryCreate(serverText, UriKind.Absolute, out var server) || server.Scheme is not ("https" or "http"))
                throw Error(clusterPath + ".server", $"'{serverText}' is not an https:// (or http://) URL", cluster.Children[new YamlScalarNode("server")]);

            var insecure = Bool(cluster, "insecure-skip-tls-verify", clusterPath + ".insecure-skip-tls-verify");
            var ca = DataOrFile(cluster, clusterPath, "certificate-authority-data", "certificate-authority", out var caField, out var caWhat, out var caLine);
            X509Certificate2Collection? authorities = null;
            if (ca is not null)
            {
                if (insecure)
                    throw Error(clusterPath + ".insecure-skip-tls-verify", $"cannot be true together with {caField}: trust the CA or skip verification, not both", cluster);
                authorities = ParseCertificates(ca, file, caField!, caWhat!, caLine);
            }

            var tlsServerName = Scalar(cluster, "tls-server-name", clusterPath + ".tls-server-name");
            if (cluster.Children.ContainsKey(new YamlScalarNode("proxy-url")))
                throw Error(clusterPath + ".proxy-url", "is not supported (the HTTPS_PROXY environment variable is honoured)", cluster);

            var userName = Scalar(context, "user", contextPath + ".user");
            X509Certificate2? clientCertificate = null;
            string? token = null, tokenFile = null, username = null, password = null;
            if (!string.IsNullOrEmpty(userName))
            {
                var (user, userPath) = Named(root, "users", userName, "user")
                    ?? throw Error(contextPath + ".user", $"no user named '{userName}' in users", context);
                var cert = DataOrFile(user, userPath, "client-certificate-data", "client-certificate", out var certField, out var certWhat, out var certLine);
                var key = DataOrFile(user, userPath, "client-key-data", "client-key", out var keyField, out var keyWhat, out var keyLine);
                if (cert is not null && key is null)
                    throw Error(userPath + ".client-key-data", $"is not set, but {certField} is: a client certificate needs its key (client-key-data or client-key)", user);
                if (key is not null && cert is null)
                    throw Error(userPath + ".client-certificate-data", $"is not set, but {keyField} is: a client key needs its certificate (client-certificate-data or client-certificate)", user);
                if (cert is not null && key is not null)
                    clientCertificate = ParseClientCertificate(cert, key, file, (certField!, certWhat!, certLine), (keyField!, keyWhat!, keyLine));

                token = Scalar(user, "token", userPath + ".token");
                var tokenFileText = Scalar(user, "tokenFile", userPath + ".tokenFile");
                if (!string.IsNullOrEmpty(tokenFileText))
                {
                    tokenFile = Resolve(tokenFileText);
                    ReadTokenFile(tokenFile, file, userPath + ".tokenFile");
                }

                username = Scalar(user, "username", userPath + ".username");
                password = Scalar(user, "password", userPath + ".password");
                var hasCredential = clientCertificate is not null || !string.IsNullOrEmpty(token) || tokenFile is not null || !string.IsNullOrEmpty(username);
                foreach (var unsupported in (string[])["exec", "auth-provider"])
                {
                    if (!hasCredential && user.Children.ContainsKey(new YamlScalarNode(unsupported)))
                        throw Error($"{userPath}.{unsupported}", "is not supported: give the user a token, tokenFile or client certificate", user);
                }
            }

            return new KubernetesClientConfig
            {
                Server = server,
                CertificateAuthorities = authorities,
                InsecureSkipTlsVerify = insecure,
                TlsServerName = string.IsNullOrEmpty(tlsServerName) ? null : tlsServerName,
                ClientCertificate = clientCertificate,
                Token = string.IsNullOrEmpty(token) ? null : token,
                TokenFile = tokenFile,
                Username = string.IsNullOrEmpty(username) ? null : username,
                Password = password,
                Namespace = Scalar(context, "namespace", contextPath + ".namespace") is { Length: > 0 } ns ? ns : null,
                Origin = $"kubeconfig {file} (context {contextName})",
            };
        }

        private YamlMappingNode LoadRoot()
        {
            var stream = new YamlStream();
            try
            {
                stream.Load(new StringReader(text));
            }
            catch (YamlException e)
            {
                throw new KubernetesConfigException(file, null, $"is not valid YAML: {e.Message}", (int)e.Start.Line, e);
            }

            if (stream.Documents.Count == 0) throw new KubernetesConfigException(file, null, "is empty");
            return stream.Documents[0].RootNode as YamlMappingNode
                ?? throw new KubernetesConfigException(file, null, "is not a kubeconfig (expected a mapping with clusters, users and contexts)");
        }

        /// <summary>The entry of a named list (clusters, users, contexts) with that name, and its path for messages.</summary>
        private (YamlMappingNode Body, string Path)? Named(YamlMappingNode root, string list, string name, string bodyKey)
        {
            if (!root.Children.TryGetValue(new YamlScalarNode(list), out var node) || IsNull(node)) return null;
            if (node is not YamlSequenceNode sequence) throw Error(list, "must be a list", node);
            for (var i = 0; i < sequence.Children.Count; i++)
            {
                if (sequence.Children[i] is not YamlMappingNode entry) throw Error($"{list}[{i}]", "must be a mapping with name and " + bodyKey, sequence.Children[i]);
                if (Scalar(entry, "name", $"{list}[{i}].name") != name) continue;
                var path = $"{list}[{name}].{bodyKey}";
                if (!entry.Children.TryGetValue(new YamlScalarNode(bodyKey), out var body) || IsNull(body)) return (new YamlMappingNode(), path);
                return body is YamlMappingNode map ? (map, path) : throw Error(path, "must be a mapping", body);
            }

            return null;
        }

        /// <summary>
        /// PEM bytes from <paramref name="dataKey"/> (base64, wins as in client-go) or from the file
        /// <paramref name="fileKey"/> names; null when neither is set.
        /// </summary>
        private byte[]? DataOrFile(YamlMappingNode map, string path, string dataKey, string fileKey, out string? field, out string? what, out int? line)
        {
            var data = Scalar(map, dataKey, $"{path}.{dataKey}");
            if (!string.IsNullOrWhiteSpace(data))
            {
                field = $"{path}.{dataKey}";
                what = "the value";
                line = LineOf(map, dataKey);
                try
                {
                    return Convert.FromBase64String(data.Trim());
                }
                catch (FormatException e)
                {
                    throw new KubernetesConfigException(file, field, "is not valid base64 (it holds the PEM text base64-encoded)", line, e);
                }
            }

            var name = Scalar(map, fileKey, $"{path}.{fileKey}");
            if (!string.IsNullOrWhiteSpace(name))
            {
                var resolved = Resolve(name);
                field = $"{path}.{fileKey}";
                what = $"the file {resolved}";
                line = LineOf(map, fileKey);
                try
                {
                    return File.ReadAllBytes(resolved);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    throw new KubernetesConfigException(file, field, $"cannot read {resolved}: {e.Message}", line, e);
                }
            }

            field = what = null;
            line = null;
            return null;
        }

        private string Resolve(string name) => Path.GetFullPath(Path.IsPathRooted(name) ? name : Path.Combine(_dir, name));

        private string? Scalar(YamlMappingNode map, string key, string path)
        {
            if (!map.Children.TryGetValue(new YamlScalarNode(key), out var node) || IsNull(node)) return null;
            return node is YamlScalarNode scalar ? scalar.Value : throw Error(path, "must be a string", node);
        }

        private bool Bool(YamlMappingNode map, string key, string path)
        {
            var value = Scalar(map, key, path);
            if (value is null) return false;
            if (bool.TryParse(value, out var b)) return b;
            throw Error(path, $"'{value}' is not true or false", map.Children[new YamlScalarNode(key)]);
        }

        private static int? LineOf(YamlMappingNode map, string key) =>
            map.Children.TryGetValue(new YamlScalarNode(key), out var node) ? (int)node.Start.Line : null;

        private static bool IsNull(YamlNode node) =>
            node is YamlScalarNode { Style: ScalarStyle.Plain, Value: null or "" or "~" or "null" };

        private KubernetesConfigException Error(string field, string problem, YamlNode at) =>
            new(file, field, problem, at.Start.Line > 0 ? (int)at.Start.Line : null);
    }
}

/// <summary>A kubeconfig or in-cluster setting is missing or wrong; the message names the file and the field.</summary>
public sealed class KubernetesConfigException : Exception
{
    public KubernetesConfigException(string file, string? field, string problem, int? line = null, Exception? innerException = null)
        : base(Format(file, field, problem, line), innerException)
    {
        File = file;
        Field = field;
        Line = line;
    }

    /// <summary>The kubeconfig (or service account file) at fault; <c>environment</c> for a missing variable.</summary>
    public string File { get; }

    /// <summary>The field, as a path (<c>users[admin].user.client-key-data</c>), or null when the whole file is at fault.</summary>
    public string? Field { get; }

    /// <summary>The 1-based line of the field in the kubeconfig, when known.</summary>
    public int? Line { get; }

    private static string Format(string file, string? field, string problem, int? line)
    {
        var where = line is { } l ? $"{file}:{l}" : file;
        return field is null ? $"{where}: {problem}" : $"{where}: {field}: {problem}";
    }
}
