namespace ProxyPlanes.TestKit;

/// <summary>Where the repository is, found by walking up from the test binaries to ProxyPlanes.sln.</summary>
public static class RepoPaths
{
    public static string Root { get; } = Find();

    /// <summary>testdata/: golden cases and sample manifests.</summary>
    public static string TestData => Path.Combine(Root, "testdata");

    private static string Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "ProxyPlanes.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"ProxyPlanes.sln not found above {AppContext.BaseDirectory}");
    }
}
