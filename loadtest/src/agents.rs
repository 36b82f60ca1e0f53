//! User agents of the org's clients: runtimes, agents, SDKs, CI, people.

pub const UA_CONTAINERD: &str = "containerd/v1.7.22";
pub const UA_CRED_PROVIDER: &str =
    "aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5 md/GOOS#linux md/GOARCH#amd64 api/ecr#1.32.0 ecr-credential-provider";
pub const UA_ECS_AGENT: &str = "aws-sdk-go/1.55.5 (go1.22.7; linux; amd64) Amazon ECS Agent - v1.86.3 (9c10fa5c)";
pub const UA_DOCKER: &str = "docker/25.0.6 go/go1.22.7 git-commit/b08a51f kernel/6.1.109-118.189.amzn2023.x86_64 os/linux arch/amd64 UpstreamClient(Go-http-client/1.1)";
pub const UA_BOTO3: &str = "Boto3/1.35.36 md/Botocore#1.35.36 ua/2.0 os/linux#5.10.226-214.880.amzn2.x86_64 md/arch#x86_64 lang/python#3.12.7 md/pyimpl#CPython exec-env/AWS_ECS_FARGATE cfg/retry-mode#legacy Botocore/1.35.36";
pub const UA_JAVA: &str = "aws-sdk-java/2.28.16 Linux/5.10.226-214.880.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/21.0.4+7-LTS Java/21.0.4 vendor/Amazon.com_Inc. md/internal exec-env/AWS_ECS_EC2 io/sync http/Apache cfg/retry-mode/legacy";
pub const UA_CNI: &str = "amazon-vpc-cni-k8s/v1.18.5 aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5 md/GOOS#linux md/GOARCH#amd64 api/ec2#1.173.0";
pub const UA_AUTOSCALER: &str = "cluster-autoscaler/v1.31.0 aws-sdk-go/1.55.5 (go1.22.7; linux; amd64)";
pub const UA_SSM_AGENT: &str = "aws-sdk-go/1.55.5 (go1.22.7; linux; amd64) amazon-ssm-agent/3.3.987.0";
pub const UA_CLI: &str = "aws-cli/2.18.5 md/awscrt#0.22.0 ua/2.0 os/macos#23.6.0 md/arch#arm64 lang/python#3.12.6 md/pyimpl#CPython cfg/retry-mode#standard md/installer#source md/prompt#off";
pub const UA_BROWSER: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36";
pub const UA_CONSOLE: &str = "AWS Internal";
pub const UA_CI: &str = "aws-sdk-js/3.654.0 ua/2.1 os/linux#6.5.0-1025-azure lang/js md/nodejs#20.17.0 api/ecr#3.654.0 exec-env/GitHubActions";
pub const UA_CI_DOCKER: &str = "docker/27.2.0 go/go1.21.13 git-commit/3ab5c7d kernel/6.5.0-1025-azure os/linux arch/amd64 UpstreamClient(Docker-Client/27.2.0 \\(linux\\))";
pub const UA_CI_ECS: &str = "aws-sdk-js/3.654.0 ua/2.1 os/linux#6.5.0-1025-azure lang/js md/nodejs#20.17.0 api/ecs#3.654.0 exec-env/GitHubActions";
