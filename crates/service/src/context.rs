//! Who is calling: the authenticated user, the project the token is scoped to, and
//! the roles mapped onto the policy table.

/// A role that the default policies know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Member,
    Reader,
}

#[derive(Debug, Clone)]
pub struct Context {
    pub user_id: String,
    pub project_id: String,
    pub roles: Vec<Role>,
}

impl Context {
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Reader, member or admin: may read its project's resources.
    pub fn can_read(&self) -> bool {
        !self.roles.is_empty()
    }

    /// Member or admin: may change its project's resources.
    pub fn can_write(&self) -> bool {
        self.roles
            .iter()
            .any(|r| matches!(r, Role::Admin | Role::Member))
    }
}
